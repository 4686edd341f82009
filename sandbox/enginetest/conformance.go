package enginetest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Target describes an engine under the conformance suite.
type Target struct {
	// New returns a fresh engine instance with no in-memory state, as a
	// restarted server would have.
	New func() sandbox.Engine
	// Spec returns a spec for a new box rooted in home.
	Spec func(t *testing.T, home, id string) sandbox.Spec
	// PersistPath returns a path inside the box whose file must survive a
	// stop and start.
	PersistPath func(spec sandbox.Spec) string
}

// Run is the conformance suite every engine passes: start, exec, recover
// after forgetting in-memory state, stop, restart with files kept, destroy
// leaving nothing, idempotent teardown.
func Run(t *testing.T, tg Target) {
	t.Helper()
	ctx := context.Background()
	home := t.TempDir()
	id := persist.NewID()
	spec := tg.Spec(t, home, id)
	eng := tg.New()
	if a := eng.Available(ctx); !a.Usable {
		t.Skipf("engine %s unusable: %s", eng.Name(), a.Reason)
	}
	h, err := eng.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { tg.New().Destroy(context.Background(), spec, h) })
	if h.Engine != eng.Name() || h.Version == 0 {
		t.Fatalf("handle %+v", h)
	}

	run := func(e sandbox.Engine, script string) string {
		t.Helper()
		conn, err := e.Dial(ctx, spec, h)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		c, err := client.New(ctx, conn, "conformance")
		if err != nil {
			t.Fatalf("hello: %v", err)
		}
		defer c.Close()
		var out bytes.Buffer
		res, err := c.Exec(ctx, wire.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}, client.ExecIO{Stdout: &out, Stderr: &out})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("exec %q: %+v %v\n%s", script, res, err, out.String())
		}
		return out.String()
	}
	pp := tg.PersistPath(spec)
	if got := run(eng, "echo hello"); got != "hello\n" {
		t.Fatalf("exec output %q", got)
	}
	run(eng, "mkdir -p "+filepath.Dir(pp)+" && echo kept > "+pp)

	// Forget in-memory state, then Recover (twice: it is idempotent).
	eng = tg.New()
	for i := range 2 {
		if err := eng.Recover(ctx, spec, h); err != nil {
			t.Fatalf("Recover #%d of a running box: %v", i+1, err)
		}
	}
	run(eng, "true")

	if err := eng.Stop(ctx, spec, h, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := eng.Recover(ctx, spec, h); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Fatalf("Recover after Stop = %v; want ErrNotRunning", err)
	}
	if err := eng.Stop(ctx, spec, h, time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	h, err = eng.Start(ctx, spec)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if got := run(eng, "cat "+pp); strings.TrimSpace(got) != "kept" {
		t.Fatalf("file after restart = %q", got)
	}

	if err := eng.Destroy(ctx, spec, h); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := eng.Recover(ctx, spec, h); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Fatalf("Recover after Destroy = %v", err)
	}
	for _, p := range []string{spec.BoxDir, spec.Socket} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Destroy", p)
		}
	}
	if err := eng.Destroy(ctx, spec, h); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
	if err := eng.Destroy(ctx, spec, sandbox.Handle{}); err != nil {
		t.Fatalf("Destroy with a zero handle: %v", err)
	}
}
