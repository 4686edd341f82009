package qemu_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func requireQEMU(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	if a := qemu.New(qemu.Config{}).Available(context.Background()); !a.Usable {
		t.Skipf("qemu unusable: %s", a.Reason)
	}
}

func newEngine(t testing.TB, home string, cfg qemu.Config) *qemu.Engine {
	cfg.Home = home
	cfg.Logger = slog.New(slog.NewTextHandler(tw{t}, nil))
	cfg.DieWithParent = true // a test binary killed by -timeout takes its VMs along
	return qemu.New(cfg)
}

func specFor(home, id string) sandbox.Spec {
	dir := filepath.Join(home, "boxes", id)
	os.MkdirAll(dir, 0o700)
	os.MkdirAll(filepath.Join(home, "run"), 0o700)
	return sandbox.Spec{ID: id, Image: "default", CPUs: 1, MemoryMiB: 512, BoxDir: dir, Socket: filepath.Join(home, "run", id+".sock")}
}

func TestQemuConformance(t *testing.T) {
	requireQEMU(t)
	home := testenv.Home(t)
	enginetest.Run(t, enginetest.Target{
		New:         func() sandbox.Engine { return newEngine(t, home, qemu.Config{}) },
		Spec:        func(t *testing.T, _, id string) sandbox.Spec { return specFor(home, id) },
		PersistPath: func(sandbox.Spec) string { return "/root/persist/file.txt" },
	})
}

// TestQemuBrokenBootFails boots a kernel told to run an init that does not
// exist (a test-only kernel argument): the start fails after its retries
// and leaves no QEMU behind. What a client sees says what happened and
// where to look, with no host path, QEMU message or console line; those go
// to the server log with the box id.
func TestQemuBrokenBootFails(t *testing.T) {
	requireQEMU(t)
	home := builtImageHome(t)
	var logBuf lockedBuffer
	eng := qemu.New(qemu.Config{Home: home, ExtraAppend: "rdinit=/no/such/init", HelloTimeout: 60 * time.Second, DieWithParent: true,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(tw{t}, &logBuf), nil))})
	spec := specFor(home, persist.NewID())
	start := time.Now()
	_, err := eng.Start(context.Background(), spec)
	if err == nil {
		t.Fatal("a broken boot started")
	}
	msg := sandbox.PublicMessage(err)
	t.Logf("failed in %v: %s", time.Since(start), msg)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(msg, "did not boot") || !strings.Contains(msg, "server log for box "+spec.ID) {
		t.Errorf("public message %q does not say what happened and where to look", msg)
	}
	for _, leak := range []string{home, "/", "qemu-system", "qemu:", "anic", "console:", "init"} {
		if strings.Contains(msg, leak) {
			t.Errorf("public message %q contains %q", msg, leak)
		}
	}
	// The detail is in the internal cause and in the log, under the box id.
	if !strings.Contains(strings.ToLower(err.Error()), "panic") {
		t.Errorf("the internal cause lacks the console tail: %v", err)
	}
	logged := logBuf.String()
	if !strings.Contains(logged, "box_id="+spec.ID) || !strings.Contains(strings.ToLower(logged), "panic") || !strings.Contains(logged, filepath.Join(spec.BoxDir, "console.log")) {
		t.Errorf("the server log lacks the box id, the console tail or the console path:\n%s", logged)
	}
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), spec.BoxDir) {
			t.Fatalf("a qemu of the failed box still runs: %s", p)
		}
	}
	eng.Destroy(context.Background(), spec, sandbox.Handle{})
}
