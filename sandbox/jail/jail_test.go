package jail_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
)

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func newEngine(t testing.TB, home string) *jail.Engine {
	return jail.New(jail.Config{Home: home, Logger: slog.New(slog.NewTextHandler(tw{t}, nil))})
}

func specFor(t *testing.T, home, id string) sandbox.Spec {
	dir := filepath.Join(home, "boxes", id)
	os.MkdirAll(dir, 0o700)
	os.MkdirAll(filepath.Join(home, "run"), 0o700)
	return sandbox.Spec{ID: id, Image: "default", CPUs: 1, MemoryMiB: 256, BoxDir: dir, Socket: filepath.Join(home, "run", id+".sock")}
}

func TestJailConformance(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	enginetest.Run(t, enginetest.Target{
		New:         func() sandbox.Engine { return newEngine(t, home) },
		Spec:        func(t *testing.T, _, id string) sandbox.Spec { return specFor(t, home, id) },
		PersistPath: func(sandbox.Spec) string { return "/root/persist/file.txt" },
	})
}

// TestAvailableIsStable: after the first call probed the image files
// (idmapped mounts), later calls report the same without reading the
// image again.
func TestAvailableIsStable(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEngine(t, testenv.Home(t))
	first := e.Available(context.Background())
	again := e.Available(context.Background())
	if !first.Usable || !slices.Equal(first.Details, again.Details) || !slices.ContainsFunc(again.Details, func(d string) bool { return strings.HasPrefix(d, "image files: ") }) {
		t.Fatalf("first %+v\nagain %+v", first, again)
	}
}
