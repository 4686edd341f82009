package qemu_test

import (
	"context"
	"errors"
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

// TestQemuBrokenBootFailsWithConsoleTail boots a kernel told to run an init
// that does not exist (a test-only kernel argument): the start fails with the
// console's last lines, after its retries, and leaves no QEMU behind.
func TestQemuBrokenBootFailsWithConsoleTail(t *testing.T) {
	requireQEMU(t)
	home := testenv.Home(t)
	eng := newEngine(t, home, qemu.Config{ExtraAppend: "rdinit=/no/such/init", HelloTimeout: 60 * time.Second})
	spec := specFor(home, persist.NewID())
	start := time.Now()
	_, err := eng.Start(context.Background(), spec)
	if err == nil {
		t.Fatal("a broken boot started")
	}
	msg := sandbox.PublicMessage(err)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(msg, "console") || !strings.Contains(strings.ToLower(msg), "panic") {
		t.Fatalf("error %q lacks the console tail", msg)
	}
	t.Logf("failed in %v: %s", time.Since(start), msg)
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), spec.BoxDir) {
			t.Fatalf("a qemu of the failed box still runs: %s", p)
		}
	}
	eng.Destroy(context.Background(), spec, sandbox.Handle{})
}
