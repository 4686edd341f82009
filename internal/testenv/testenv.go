// Package testenv gives tests what the real engines need: root, a built
// guest agent and a built default image, cached across test runs.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/internal/testagent"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

// RequireRoot skips t unless it runs as root. `make test` runs as root on
// the CI machines, so these tests run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// CacheHome is the home whose images/ tests share: $BOXLITE_TEST_HOME, or
// /var/tmp/boxlite-test-home.
func CacheHome() string {
	if h := os.Getenv("BOXLITE_TEST_HOME"); h != "" {
		return h
	}
	return "/var/tmp/boxlite-test-home"
}

// Agent builds cmd/boxlite-guest (static) once per test process.
func Agent(t testing.TB) string {
	t.Helper()
	return testagent.Path(t)
}

// Image makes sure the default image exists in CacheHome (building it the
// first time: about a minute) and returns it.
func Image(t testing.TB) *image.Image {
	t.Helper()
	RequireRoot(t)
	home := CacheHome()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// Build reuses a built image, refreshing its guest agent when this
	// tree's agent differs; the first build takes about a minute.
	agent := Agent(t)
	img, err := image.Build(ctx, image.BuildConfig{Home: home, Agent: agent, AgentVersion: guestagent.Version, Progress: logWriter{t},
		Kernel: qemu.KernelStep(agent),
		Initramfs: func(dir, agent string, k *image.Kernel) (string, error) {
			return qemu.WriteInitramfs(dir, agent, k.Modules)
		}})
	if err != nil {
		t.Fatalf("building the default image: %v", err)
	}
	return img
}

// Home returns a fresh home for one test whose images/ is the shared cache.
func Home(t testing.TB) string {
	t.Helper()
	Image(t)
	home := t.TempDir()
	if err := os.Symlink(filepath.Join(CacheHome(), "images"), filepath.Join(home, "images")); err != nil {
		t.Fatal(err)
	}
	return home
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
