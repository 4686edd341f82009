package enginetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// BuiltImageHome is a fresh home seeing the shared test images, for tests
// that need an image to exist but not its agent to answer: it does not wait
// for (or start) a rebuild when one is already built, as testenv.Home does.
func BuiltImageHome(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	images := filepath.Join(testenv.CacheHome(), "images")
	if _, err := os.Stat(filepath.Join(images, "default", "manifest.json")); err != nil {
		return testenv.Home(t)
	}
	home := t.TempDir()
	if err := os.Symlink(images, filepath.Join(home, "images")); err != nil {
		t.Fatal(err)
	}
	return home
}

// Until polls cond every 10 ms, failing t after a minute (a guard against
// a hang, not a timing assertion).
func Until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// KilledDuringBoot is the VM engines' test of issue 16's incident: a
// server SIGKILLed while a box booted left its VMM running with no engine
// state in the registry. crash plays that server and returns the box's
// spec and the orphaned VMM (what names it, e.g. "QEMU", is vmm). The next
// server's Destroy and Recover, given a zero handle, must find that VMM
// through the box directory and kill it; Dial must not reach a box that
// was never handed over.
func KilledDuringBoot(t *testing.T, eng sandbox.Engine, vmm string, crash func(t *testing.T) (sandbox.Spec, proc.ID)) {
	ctx := context.Background()
	t.Run("destroy", func(t *testing.T) {
		spec, p := crash(t)
		if err := eng.Destroy(ctx, spec, sandbox.Handle{}); err != nil {
			t.Fatalf("Destroy with a zero handle: %v", err)
		}
		if p.Alive() {
			t.Fatalf("Destroy answered success while the box's %s (pid %d) still runs", vmm, p.PID)
		}
		if _, err := os.Stat(spec.BoxDir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("box directory (and disk) left: %v", err)
		}
	})
	t.Run("recover", func(t *testing.T) {
		spec, p := crash(t)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := eng.Dial(dctx, spec, sandbox.Handle{}); err == nil {
			t.Fatal("Dial with a zero handle connected to a box that was never handed over")
		}
		// A box the dead server never handed over is not running: its
		// leftover VMM is killed and the disk lock released.
		if err := eng.Recover(ctx, spec, sandbox.Handle{}); !errors.Is(err, sandbox.ErrNotRunning) {
			t.Fatalf("Recover with a zero handle = %v; want ErrNotRunning", err)
		}
		if p.Alive() {
			t.Fatalf("Recover left the box's %s (pid %d) running", vmm, p.PID)
		}
		if err := eng.Destroy(ctx, spec, sandbox.Handle{}); err != nil {
			t.Fatal(err)
		}
	})
}
