package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	leakCheck(t)
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

// mustCreate creates a box or fails the test (never a nil box later).
func mustCreate(t *testing.T, m *sandbox.Manager, owner string, req sandbox.CreateRequest) *sandbox.Box {
	t.Helper()
	b, err := m.Create(context.Background(), owner, req)
	if err != nil {
		t.Fatalf("Create(%+v): %v", req, err)
	}
	return b
}

// waitStatus waits (bounded) until box ref has status want: an exit is
// recorded by the exit watcher in the background.
func waitStatus(t *testing.T, m *sandbox.Manager, owner, ref string, want sandbox.Status) *sandbox.Box {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := m.Get(context.Background(), owner, ref)
		if err == nil && b.Status == want {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("box %s: status %v (err %v); want %s", ref, b, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leakCheck fails the test if goroutines it started outlive it (after every
// manager is closed and every fake box killed).
func leakCheck(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

func run(t *testing.T, m *sandbox.Manager, owner, ref, script string) (string, *sandbox.ExecResult) {
	t.Helper()
	var out bytes.Buffer
	res, _, err := m.Exec(context.Background(), owner, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", script}}, sandbox.ExecIO{Stdout: &out, Stderr: &out})
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
	if _, _, err := m.Exec(ctx, "bob", b.ID, sandbox.ExecRequest{Argv: []string{"true"}}, sandbox.ExecIO{}); !errors.Is(err, sandbox.ErrNotFound) {
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
	b := mustCreate(t, m, "o", sandbox.CreateRequest{})
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
	b := mustCreate(t, m, "o", sandbox.CreateRequest{})
	run(t, m, "o", b.ID, "true")

	// Killed mid-exec: the call fails with a clear error and the box is stopped.
	errc := make(chan error, 1)
	started := &signalWriter{ch: make(chan struct{})}
	go func() {
		_, _, err := m.Exec(ctx, "o", b.ID, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo started; sleep 30"}}, sandbox.ExecIO{Stdout: started})
		errc <- err
	}()
	select {
	case <-started.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the exec never started")
	}
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
	e.advance(time.Second) // past staleAfter: the cached connection is checked
	if out, _ := run(t, m, "o", b.ID, "echo again"); out != "again\n" {
		t.Fatalf("after second kill %q", out)
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1, fake := e.manager()
	m1.Reconcile(ctx) // records the boot id
	alive := mustCreate(t, m1, "o", sandbox.CreateRequest{Name: "alive"})
	dead := mustCreate(t, m1, "o", sandbox.CreateRequest{Name: "dead"})
	stopped := mustCreate(t, m1, "o", sandbox.CreateRequest{Name: "stopped"})
	if _, err := m1.Stop(ctx, "o", stopped.ID); err != nil {
		t.Fatal(err)
	}
	// An orphan: a box directory whose row is gone, with a "process" still running.
	orphan := mustCreate(t, m1, "o", sandbox.CreateRequest{Name: "orphan"})
	st, _ := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	st.Delete(ctx, orphan.ID)
	st.Close()
	m1.Close()
	fake.Kill(dead.ID) // dies while no server watches
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

	// Simulated reboot: the server and every box process are gone, and the boot id changed.
	m2.Close()
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

// TestExitIsRecordedAtOnce: a box whose process dies is listed as stopped
// without anyone calling it (the server that started it watches its exit);
// on the old code it stayed "running" until the next call.
func TestExitIsRecordedAtOnce(t *testing.T) {
	e := newEnv(t)
	m, fake := e.manager()
	b := mustCreate(t, m, "o", sandbox.CreateRequest{})
	fake.Kill(b.ID)
	got := waitStatus(t, m, "o", b.ID, sandbox.StatusStopped)
	if got.StatusReason != "box process exited" {
		t.Fatalf("reason %q", got.StatusReason)
	}
	// A second server on the same home learns it from the registry.
	m2, _ := e.manager()
	if g, err := m2.Get(context.Background(), "o", b.ID); err != nil || g.Status != sandbox.StatusStopped {
		t.Fatalf("second server sees %+v, %v", g, err)
	}
}

// TestForeignEngineBoxesAreLeftAlone: a server without a box's engine
// neither marks it failed nor touches it; it refuses calls with a clear
// error, and a server that has the engine still runs it.
func TestForeignEngineBoxesAreLeftAlone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1, _ := e.manager()
	b := mustCreate(t, m1, "o", sandbox.CreateRequest{Name: "theirs"})
	m1.Close()

	st, err := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	other, err := sandbox.New(sandbox.Config{Home: e.home, Store: st,
		Engines: []sandbox.Engine{&enginetest.Fake{W: enginetest.NewWorld(), EngineName: "other"}},
		BootID:  func() (string, error) { return e.boot.Load().(string), nil }})
	if err != nil {
		t.Fatal(err)
	}
	rep := other.Reconcile(ctx)
	if len(rep.Foreign) != 1 || len(rep.Failed)+len(rep.Stopped) != 0 {
		t.Fatalf("reconcile without the engine: %+v", rep)
	}
	other.Reap(ctx)
	if g, _ := other.Get(ctx, "o", "theirs"); g.Status != sandbox.StatusRunning {
		t.Fatalf("box is %s after a server without its engine looked at it", g.Status)
	}
	_, _, err = other.Exec(ctx, "o", "theirs", sandbox.ExecRequest{Argv: []string{"true"}}, sandbox.ExecIO{})
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(sandbox.PublicMessage(err), "cannot run") {
		t.Fatalf("exec through a server without the engine: %v", err)
	}
	if _, err := other.Destroy(ctx, "o", "theirs"); err == nil {
		t.Fatal("a server without the engine destroyed the box")
	}
	other.Close()
	m3, _ := e.manager()
	m3.Reconcile(ctx)
	run(t, m3, "o", b.ID, "true")
}

func TestReconcileFinishesDestroyAndFailsCrashedCreate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, _ := e.manager()
	a := mustCreate(t, m, "o", sandbox.CreateRequest{Name: "a"})
	b := mustCreate(t, m, "o", sandbox.CreateRequest{Name: "b"})
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
	idle := mustCreate(t, m, "o", sandbox.CreateRequest{Name: "idle"})
	short := mustCreate(t, m, "o", sandbox.CreateRequest{Name: "short", IdleTimeout: time.Minute})
	used := mustCreate(t, m, "o", sandbox.CreateRequest{Name: "used"})
	ttl := mustCreate(t, m, "o", sandbox.CreateRequest{Name: "ttl", TTL: 5 * time.Minute})

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
	b := mustCreate(t, m1, "o", sandbox.CreateRequest{Name: "shared"})
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
	if _, _, err := m1.Exec(ctx, "o", b.ID, sandbox.ExecRequest{Argv: []string{"true"}}, sandbox.ExecIO{}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("exec via m1 after m2 destroyed: %v", err)
	}
}

func TestAgentErrorsKeepTheirClass(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, _ := e.manager()
	b := mustCreate(t, m, "o", sandbox.CreateRequest{})
	_, _, err := m.ReadFile(ctx, "o", b.ID, sandbox.ReadFileRequest{Path: "/definitely/missing"}, &bytes.Buffer{})
	if !errors.Is(err, sandbox.ErrNotFound) || !errors.Is(err, sandbox.ErrNotInBox) || !strings.Contains(sandbox.PublicMessage(err), "/definitely/missing") {
		t.Fatalf("read missing = %v", err)
	}
	_, _, err = m.Exec(ctx, "o", b.ID, sandbox.ExecRequest{Argv: []string{"no-such-binary-x"}}, sandbox.ExecIO{})
	if !errors.Is(err, sandbox.ErrNotFound) || !errors.Is(err, sandbox.ErrNotInBox) {
		t.Fatalf("exec missing binary = %v", err)
	}
	// A missing box is not a missing file in it.
	_, _, err = m.Exec(ctx, "o", "no-such-box", sandbox.ExecRequest{Argv: []string{"true"}}, sandbox.ExecIO{})
	if !errors.Is(err, sandbox.ErrNotFound) || errors.Is(err, sandbox.ErrNotInBox) {
		t.Fatalf("exec in a missing box = %v", err)
	}
}

// signalWriter closes ch at its first write.
type signalWriter struct {
	once sync.Once
	ch   chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.ch) })
	return len(p), nil
}

// TestStopAbandonedTransition: stop on a box left creating or starting by a
// server that died kills what that start left and stops the box (it used to
// do nothing for creating, or fail with an internal error).
func TestStopAbandonedTransition(t *testing.T) {
	for _, st := range []sandbox.Status{sandbox.StatusCreating, sandbox.StatusStarting} {
		t.Run(string(st), func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			m, _ := e.manager()
			b := mustCreate(t, m, "o", sandbox.CreateRequest{})
			m.Close() // the server "dies" with the box mid-transition
			db, err := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Update(ctx, b.ID, func(r *persist.Box) error { r.Status = string(st); return nil }); err != nil {
				t.Fatal(err)
			}
			db.Close()
			m2, _ := e.manager()
			got, err := m2.Stop(ctx, "o", b.ID)
			if err != nil || got.Status != sandbox.StatusStopped {
				t.Fatalf("Stop of a %s box: %+v, %v", st, got, err)
			}
			if e.world.Running() != 0 {
				t.Fatal("the abandoned box process still runs")
			}
			run(t, m2, "o", b.ID, "true") // and it starts again on use
		})
	}
}

// TestReaperSettlesStuckTransitions: a box left in a transitional status by
// a dead server, which nobody calls, is reconciled by the reaper once it is
// older than any live transition could be.
func TestReaperSettlesStuckTransitions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, fake := e.manager()
	b := mustCreate(t, m, "o", sandbox.CreateRequest{})
	m.Close()
	fake.Kill(b.ID)
	db, err := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Update(ctx, b.ID, func(r *persist.Box) error { r.Status = string(sandbox.StatusCreating); return nil }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	m2, _ := e.manager()
	if rep := m2.Reap(ctx); len(rep.Settled) != 0 {
		t.Fatalf("a fresh transition was taken for stuck: %+v", rep)
	}
	e.advance(400 * 24 * time.Hour) // far past StartTimeout (the store stamps rows with the real clock)
	rep := m2.Reap(ctx)
	if fmt.Sprint(rep.Settled) != fmt.Sprint([]string{b.ID}) || len(rep.Errors) != 0 {
		t.Fatalf("reap: %+v", rep)
	}
	if g, _ := m2.Get(ctx, "o", b.ID); g.Status != sandbox.StatusFailed {
		t.Fatalf("stuck creating box is %s; want failed", g.Status)
	}
}

// TestAdmission: memory beyond the server's limit (counting what runs),
// more CPUs than the host has, and box counts are refused with a message
// that says what was asked, what is left and what to do; a stopped box
// holds no memory but must fit again when it restarts.
func TestAdmission(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	st, err := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := sandbox.New(sandbox.Config{Home: e.home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: e.world}},
		MaxMemoryMiB: 1024, MaxBoxes: 3, OwnerMaxBoxes: 2, HostCPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a := mustCreate(t, m, "o", sandbox.CreateRequest{MemoryMiB: 768})
	_, err = m.Create(ctx, "o", sandbox.CreateRequest{MemoryMiB: 512})
	if !errors.Is(err, sandbox.ErrResourceExhausted) || !strings.Contains(sandbox.PublicMessage(err), "needs 512 MiB") ||
		!strings.Contains(sandbox.PublicMessage(err), "only 256 MiB") {
		t.Fatalf("over the memory limit: %v", err)
	}
	if _, err := m.Create(ctx, "o", sandbox.CreateRequest{CPUs: 3}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Fatalf("more CPUs than the host: %v", err)
	}
	if _, err := m.Stop(ctx, "o", a.ID); err != nil {
		t.Fatal(err)
	}
	b := mustCreate(t, m, "o", sandbox.CreateRequest{MemoryMiB: 512}) // a stopped box holds no memory
	// The stopped box no longer fits beside b.
	_, _, err = m.Exec(ctx, "o", a.ID, sandbox.ExecRequest{Argv: []string{"true"}}, sandbox.ExecIO{})
	if !errors.Is(err, sandbox.ErrResourceExhausted) {
		t.Fatalf("restart over the memory limit: %v", err)
	}
	if g, _ := m.Get(ctx, "o", a.ID); g.Status != sandbox.StatusStopped {
		t.Fatalf("refused restart left the box %s", g.Status)
	}
	if _, err := m.Create(ctx, "o", sandbox.CreateRequest{MemoryMiB: 64}); !errors.Is(err, sandbox.ErrResourceExhausted) ||
		!strings.Contains(sandbox.PublicMessage(err), "you have 2 boxes") {
		t.Fatalf("owner over its box cap: %v", err)
	}
	mustCreate(t, m, "p", sandbox.CreateRequest{MemoryMiB: 64})
	if _, err := m.Create(ctx, "q", sandbox.CreateRequest{MemoryMiB: 64}); !errors.Is(err, sandbox.ErrResourceExhausted) ||
		!strings.Contains(sandbox.PublicMessage(err), "limit of 3 boxes") {
		t.Fatalf("server over its box cap: %v", err)
	}
	if _, err := m.Destroy(ctx, "o", b.ID); err != nil {
		t.Fatal(err)
	}
	run(t, m, "o", a.ID, "true") // fits again
}

// TestOrphanWithoutEngineStateIsKilled: a box directory with no row and no
// engine.json (a server killed between spawning the box and recording it)
// still has its process killed by reconcile, through every engine, before
// the directory goes; the old code removed the directory and left the
// process running.
func TestOrphanWithoutEngineStateIsKilled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1, _ := e.manager()
	b := mustCreate(t, m1, "o", sandbox.CreateRequest{})
	m1.Close()
	st, err := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Delete(ctx, b.ID)
	st.Close()
	os.Remove(filepath.Join(b.Spec.BoxDir, "engine.json"))
	m2, _ := e.manager()
	rep := m2.Reconcile(ctx)
	if fmt.Sprint(rep.Orphans) != fmt.Sprint([]string{b.ID}) || len(rep.Errors) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if e.world.Running() != 0 {
		t.Fatal("the orphan's process still runs")
	}
	if _, err := os.Stat(b.Spec.BoxDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan dir left: %v", err)
	}
}

// TestLastUsedIsLazy: calls within a moment of the last recorded use do
// not write last_used_at again; a call after that moment does, so the
// reaper of any server sees a box used within its idle timeout.
func TestLastUsedIsLazy(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager()
	b := mustCreate(t, m, "o", sandbox.CreateRequest{})
	lastUsed := func() time.Time {
		got, err := m.Get(context.Background(), "o", b.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.LastUsedAt
	}
	for _, step := range []struct {
		advance time.Duration
		written bool
	}{
		{0, true}, // the first call of this process
		{300 * time.Millisecond, false},
		{300 * time.Millisecond, false},
		{time.Second, true},
		{10 * time.Minute, true},
	} {
		e.advance(step.advance)
		before := lastUsed()
		run(t, m, "o", b.ID, "true")
		now := time.UnixMilli(e.now.Load())
		if got := lastUsed(); step.written != got.Equal(now) || got.Before(before) {
			t.Fatalf("after %v: last_used_at %v (was %v, now %v), want written=%v", step.advance, got, before, now, step.written)
		}
	}
}
