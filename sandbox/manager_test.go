package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// env is a home with a store, a fake World and a clock shared by managers.
type env struct {
	t     *testing.T
	home  string
	world *enginetest.World
	now   atomic.Int64 // unix ms
	boot  atomic.Value // string
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, home: t.TempDir(), world: enginetest.NewWorld()}
	e.now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	e.boot.Store("boot-1")
	t.Cleanup(e.world.KillAll)
	return e
}

func (e *env) advance(d time.Duration) { e.now.Add(d.Milliseconds()) }

// manager opens a store and a manager on the env's home: one "server process".
func (e *env) manager() (*sandbox.Manager, *enginetest.Fake) {
	e.t.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	fake := &enginetest.Fake{W: e.world}
	m, err := sandbox.New(sandbox.Config{
		Home: e.home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: e.world, EngineName: "broken", Unusable: "no such hardware"}, fake},
		IdleTimeout: 10 * time.Minute,
		Now:         func() time.Time { return time.UnixMilli(e.now.Load()) },
		BootID:      func() (string, error) { return e.boot.Load().(string), nil },
		Logger:      slog.New(slog.NewTextHandler(tWriter{e.t}, nil)),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Close(); st.Close() })
	return m, fake
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func run(t *testing.T, m *sandbox.Manager, owner, ref, script string) (string, *wire.ExecResult) {
	t.Helper()
	var out bytes.Buffer
	res, _, err := m.Exec(context.Background(), owner, ref, wire.ExecRequest{Argv: []string{"sh", "-c", script}}, client.ExecIO{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return out.String(), res
}

func TestCreateExecListDestroy(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager()
	ctx := context.Background()
	b, err := m.Create(ctx, "alice", sandbox.CreateRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != sandbox.StatusRunning || b.Engine != "fake" || b.Spec.CPUs != 1 || b.Spec.MemoryMiB != 512 || b.Image != "default" {
		t.Fatalf("created %+v", b)
	}
	if out, res := run(t, m, "alice", "web", "echo hi; exit 4"); out != "hi\n" || res.ExitCode != 4 {
		t.Fatalf("exec %q %+v", out, res)
	}
	// Another owner can neither see nor use it.
	if _, _, err := m.Exec(ctx, "bob", b.ID, wire.ExecRequest{Argv: []string{"true"}}, client.ExecIO{}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("bob exec = %v", err)
	}
	if l, _ := m.List(ctx, "bob", ""); len(l) != 0 {
		t.Fatal("bob sees alice's box")
	}
	if l, _ := m.List(ctx, "alice", sandbox.StatusRunning); len(l) != 1 {
		t.Fatalf("alice lists %d running", len(l))
	}
	if _, err := m.List(ctx, "alice", "bogus"); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Fatalf("bad status filter = %v", err)
	}
	// Prefix lookup.
	if got, err := m.Get(ctx, "alice", b.ID[:8]); err != nil || got.ID != b.ID {
		t.Fatalf("prefix Get = %v, %v", got, err)
	}
	if _, err := m.Destroy(ctx, "alice", "web"); err != nil {
		t.Fatal(err)
	}
	if e.world.Running() != 0 {
		t.Fatal("box process left after destroy")
	}
	for _, p := range []string{b.Spec.BoxDir, b.Spec.Socket, filepath.Join(e.home, "locks", b.ID+".lock")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after destroy", p)
		}
	}
	if _, err := m.Destroy(ctx, "alice", "web"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("second destroy = %v", err)
	}
}

func TestCreateValidationAndEngines(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager()
	ctx := context.Background()
	tests := []struct {
		req   sandbox.CreateRequest
		class error
	}{
		{sandbox.CreateRequest{Name: "-bad"}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{Name: strings.Repeat("a", 64)}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{CPUs: 99}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{MemoryMiB: 10}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{Image: "../etc"}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{Env: map[string]string{"A=B": "x"}}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{Engine: "nope"}, sandbox.ErrInvalidArgument},
		{sandbox.CreateRequest{Engine: "broken"}, sandbox.ErrUnavailable},
	}
	for _, tt := range tests {
		if _, err := m.Create(ctx, "o", tt.req); !errors.Is(err, tt.class) {
			t.Errorf("Create(%+v) = %v; want %v", tt.req, err, tt.class)
		}
	}
	_, err := m.Create(ctx, "o", sandbox.CreateRequest{Engine: "broken"})
	if !strings.Contains(sandbox.PublicMessage(err), "no such hardware") {
		t.Errorf("unusable engine message %q lacks the reason", sandbox.PublicMessage(err))
	}
	// auto skips the unusable engine.
	if b, err := m.Create(ctx, "o", sandbox.CreateRequest{Engine: "auto"}); err != nil || b.Engine != "fake" {
		t.Fatalf("auto = %+v, %v", b, err)
	}
}

func TestNameTakenNamesExistingBox(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager()
	a, err := m.Create(context.Background(), "o", sandbox.CreateRequest{Name: "dup"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Create(context.Background(), "o", sandbox.CreateRequest{Name: "dup"})
	if !errors.Is(err, sandbox.ErrAlreadyExists) || !strings.Contains(sandbox.PublicMessage(err), a.ID) {
		t.Fatalf("dup create = %v", err)
	}
	if e.world.Starts.Load() != 1 {
		t.Fatal("a box was started for the duplicate name")
	}
}

func TestFailedStartLeavesNothing(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager()
	e.world.FailStart = errors.New("kernel panic")
	_, err := m.Create(context.Background(), "o", sandbox.CreateRequest{Name: "x"})
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Create = %v", err)
	}
	if l, _ := m.List(context.Background(), "o", ""); len(l) != 0 {
		t.Fatalf("rows left: %+v", l[0])
	}
	if ents, _ := os.ReadDir(filepath.Join(e.home, "boxes")); len(ents) != 0 {
		t.Fatal("box dir left")
	}
	e.world.FailStart = nil
	if _, err := m.Create(context.Background(), "o", sandbox.CreateRequest{Name: "x"}); err != nil {
		t.Fatalf("name not free after failed create: %v", err)
	}
}

func TestStopStartAndExecRestartsStoppedBox(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager()
	ctx := context.Background()
	b, _ := m.Create(ctx, "o", sandbox.CreateRequest{})
	f := filepath.Join(b.Spec.BoxDir, "note")
	run(t, m, "o", b.ID, "echo kept > "+f)
	s, err := m.Stop(ctx, "o", b.ID)
	if err != nil || s.Status != sandbox.StatusStopped || e.world.Running() != 0 {
		t.Fatalf("Stop = %+v, %v", s, err)
	}
	if _, err := m.Stop(ctx, "o", b.ID); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if out, _ := run(t, m, "o", b.ID, "cat "+f); out != "kept\n" {
		t.Fatalf("after restart: %q", out)
	}
	if g, _ := m.Get(ctx, "o", b.ID); g.Status != sandbox.StatusRunning {
		t.Fatalf("status after exec on stopped box: %s", g.Status)
	}
}

func TestKilledBoxIsNoticedAndRestarted(t *testing.T) {
	e := newEnv(t)
	m, fake := e.manager()
	ctx := context.Background()
	b, _ := m.Create(ctx, "o", sandbox.CreateRequest{})
	run(t, m, "o", b.ID, "true")

	// Killed mid-exec: the call fails with a clear error and the box is stopped.
	errc := make(chan error, 1)
	go func() {
		_, _, err := m.Exec(ctx, "o", b.ID, wire.ExecRequest{Argv: []string{"sleep", "30"}}, client.ExecIO{})
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	fake.Kill(b.ID)
	select {
	case err := <-errc:
		if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(sandbox.PublicMessage(err), "stopped during the call") {
			t.Fatalf("exec during kill = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exec did not return after the box died")
	}
	if g, _ := m.Get(ctx, "o", b.ID); g.Status != sandbox.StatusStopped || g.StatusReason == "" {
		t.Fatalf("after kill: %s (%s)", g.Status, g.StatusReason)
	}
	if out, _ := run(t, m, "o", b.ID, "echo back"); out != "back\n" {
		t.Fatalf("after restart %q", out)
	}
	// Killed between calls: the next call notices and restarts.
	fake.Kill(b.ID)
	time.Sleep(300 * time.Millisecond) // past staleAfter: the cached connection is checked
	if out, _ := run(t, m, "o", b.ID, "echo again"); out != "again\n" {
		t.Fatalf("after second kill %q", out)
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1, fake := e.manager()
	m1.Reconcile(ctx) // records the boot id
	alive, _ := m1.Create(ctx, "o", sandbox.CreateRequest{Name: "alive"})
	dead, _ := m1.Create(ctx, "o", sandbox.CreateRequest{Name: "dead"})
	stopped, _ := m1.Create(ctx, "o", sandbox.CreateRequest{Name: "stopped"})
	m1.Stop(ctx, "o", stopped.ID)
	fake.Kill(dead.ID)
	// An orphan: a box directory whose row is gone, with a "process" still running.
	orphan, _ := m1.Create(ctx, "o", sandbox.CreateRequest{Name: "orphan"})
	st, _ := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	st.Delete(ctx, orphan.ID)
	st.Close()
	m1.Close()

	// A new server process on the same home.
	m2, _ := e.manager()
	rep := m2.Reconcile(ctx)
	if rep.Rebooted || rep.Alive != 1 || fmt.Sprint(rep.Stopped) != fmt.Sprint([]string{dead.ID}) ||
		fmt.Sprint(rep.Orphans) != fmt.Sprint([]string{orphan.ID}) || len(rep.Errors) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := os.Stat(orphan.Spec.BoxDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("orphan dir left")
	}
	if e.world.Running() != 1 {
		t.Fatalf("%d fake boxes run; want only %s", e.world.Running(), alive.ID)
	}
	for name, want := range map[string]sandbox.Status{"alive": sandbox.StatusRunning, "dead": sandbox.StatusStopped, "stopped": sandbox.StatusStopped} {
		if g, _ := m2.Get(ctx, "o", name); g.Status != want {
			t.Errorf("%s: %s; want %s", name, g.Status, want)
		}
	}
	run(t, m2, "o", "alive", "true") // reattached
	run(t, m2, "o", "dead", "true")  // restarted on demand

	// Simulated reboot: every box process is gone and the boot id changed.
	e.world.KillAll()
	e.boot.Store("boot-2")
	m3, _ := e.manager()
	rep = m3.Reconcile(ctx)
	if !rep.Rebooted || len(rep.Stopped) != 2 {
		t.Fatalf("after reboot %+v", rep)
	}
	if out, _ := run(t, m3, "o", "alive", "echo up"); out != "up\n" {
		t.Fatal("box did not start on demand after reboot")
	}
}

func TestReconcileFinishesDestroyAndFailsCrashedCreate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, _ := e.manager()
	a, _ := m.Create(ctx, "o", sandbox.CreateRequest{Name: "a"})
	b, _ := m.Create(ctx, "o", sandbox.CreateRequest{Name: "b"})
	st, _ := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	st.Update(ctx, a.ID, func(r *persist.Box) error { r.Status = "destroying"; return nil })
	st.Update(ctx, b.ID, func(r *persist.Box) error { r.Status = "creating"; return nil })
	st.Close()
	e.world.KillAll()
	rep := m.Reconcile(ctx)
	if fmt.Sprint(rep.Destroyed) != fmt.Sprint([]string{a.ID}) || fmt.Sprint(rep.Failed) != fmt.Sprint([]string{b.ID}) {
		t.Fatalf("report %+v", rep)
	}
	if g, err := m.Get(ctx, "o", "b"); err != nil || g.Status != sandbox.StatusFailed || g.StatusReason == "" {
		t.Fatalf("b = %+v, %v", g, err)
	}
	if _, err := m.Get(ctx, "o", "a"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("a still there: %v", err)
	}
	// A failed box starts again on the next call.
	run(t, m, "o", "b", "true")
}

func TestReaper(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, _ := e.manager()
	idle, _ := m.Create(ctx, "o", sandbox.CreateRequest{Name: "idle"})
	short, _ := m.Create(ctx, "o", sandbox.CreateRequest{Name: "short", IdleTimeout: time.Minute})
	used, _ := m.Create(ctx, "o", sandbox.CreateRequest{Name: "used"})
	ttl, _ := m.Create(ctx, "o", sandbox.CreateRequest{Name: "ttl", TTL: 5 * time.Minute})

	e.advance(2 * time.Minute)
	rep := m.Reap(ctx)
	if fmt.Sprint(rep.Stopped) != fmt.Sprint([]string{short.ID}) || len(rep.Destroyed) != 0 {
		t.Fatalf("at 2m: %+v", rep)
	}
	e.advance(4 * time.Minute)
	run(t, m, "o", "used", "true")
	rep = m.Reap(ctx)
	if fmt.Sprint(rep.Destroyed) != fmt.Sprint([]string{ttl.ID}) || len(rep.Stopped) != 0 {
		t.Fatalf("at 6m: %+v", rep)
	}
	e.advance(5 * time.Minute) // 11m: idle past the 10m default, used only 5m ago
	rep = m.Reap(ctx)
	if fmt.Sprint(rep.Stopped) != fmt.Sprint([]string{idle.ID}) {
		t.Fatalf("at 11m: %+v", rep)
	}
	if g, _ := m.Get(ctx, "o", used.ID); g.Status != sandbox.StatusRunning {
		t.Fatal("recently used box was stopped")
	}
}

// TestTwoManagersShareBoxes: two managers (two server processes) on one
// home. A stopped box hit by both at once is started exactly once, and each
// sees the other's boxes.
func TestTwoManagersShareBoxes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1, _ := e.manager()
	m2, _ := e.manager()
	b, _ := m1.Create(ctx, "o", sandbox.CreateRequest{Name: "shared"})
	m1.Stop(ctx, "o", "shared")
	e.world.StartDelay = 300 * time.Millisecond
	before := e.world.Starts.Load()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := m1
			if i%2 == 1 {
				m = m2
			}
			if out, _ := run(t, m, "o", "shared", "echo ok"); out != "ok\n" {
				t.Errorf("exec %d: %q", i, out)
			}
		}()
	}
	wg.Wait()
	if n := e.world.Starts.Load() - before; n != 1 {
		t.Fatalf("box started %d times", n)
	}
	if _, err := m2.Destroy(ctx, "o", b.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m1.Exec(ctx, "o", b.ID, wire.ExecRequest{Argv: []string{"true"}}, client.ExecIO{}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("exec via m1 after m2 destroyed: %v", err)
	}
}

func TestAgentErrorsKeepTheirClass(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, _ := e.manager()
	b, _ := m.Create(ctx, "o", sandbox.CreateRequest{})
	_, _, err := m.ReadFile(ctx, "o", b.ID, wire.ReadFileReq{Path: "/definitely/missing"}, &bytes.Buffer{})
	if !errors.Is(err, sandbox.ErrNotFound) || !strings.Contains(sandbox.PublicMessage(err), "/definitely/missing") {
		t.Fatalf("read missing = %v", err)
	}
	_, _, err = m.Exec(ctx, "o", b.ID, wire.ExecRequest{Argv: []string{"no-such-binary-x"}}, client.ExecIO{})
	if !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("exec missing binary = %v", err)
	}
}
