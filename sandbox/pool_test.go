package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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

// poolEnv is an env whose home has a default image manifest (the pool's
// image identity) and whose managers keep a pool of the fake engine.
type poolEnv struct {
	*env
	warms atomic.Int64
}

func newPoolEnv(t *testing.T) *poolEnv {
	e := &poolEnv{env: newEnv(t)}
	e.setManifest("build-1")
	return e
}

// setManifest writes the default image's manifest: a new content is a
// rebuilt image.
func (e *poolEnv) setManifest(build string) {
	dir := filepath.Join(e.home, "images", "default")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"build":"`+build+`"}`), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// manager is one server process on the home with cfg's pool settings.
func (e *poolEnv) manager(pools map[string]int, mod func(*sandbox.Config)) *sandbox.Manager {
	e.t.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := sandbox.Config{
		Home: e.home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: e.world}},
		Pools: pools, PoolInterval: 20 * time.Millisecond,
		Now:    func() time.Time { return time.UnixMilli(e.now.Load()) },
		BootID: func() (string, error) { return e.boot.Load().(string), nil },
		Logger: slog.New(slog.NewTextHandler(tWriter{e.t}, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := sandbox.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	sandbox.SetPoolWarm(m, func(ctx context.Context, c *client.Client) error {
		res, err := c.Exec(ctx, wire.ExecRequest{Argv: []string{"true"}}, client.ExecIO{})
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d", res.ExitCode)
		}
		e.warms.Add(1)
		return err
	})
	e.t.Cleanup(func() { m.Close(); st.Close() })
	return m
}

// pooled returns the ids of the pooled (ready) boxes.
func pooled(t *testing.T, m *sandbox.Manager) []string {
	t.Helper()
	bs, err := m.PoolBoxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range bs {
		if b.Status == sandbox.StatusPooled {
			ids = append(ids, b.ID)
		}
	}
	return ids
}

// waitPooled waits until exactly n boxes are pooled (and none is being
// made or removed), failing after a generous deadline.
func waitPooled(t *testing.T, m *sandbox.Manager, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		bs, _ := m.PoolBoxes(context.Background())
		ids := pooled(t, m)
		if len(ids) == n && len(bs) == n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d ready boxes (%d rows); want %d", len(ids), len(bs), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPoolClaimAndRefill: a default create claims a pooled box (owner,
// name, env, TTL set; not listed while pooled), the pool refills, and a
// create of another shape starts cold.
func TestPoolClaimAndRefill(t *testing.T) {
	e := newPoolEnv(t)
	m := e.manager(map[string]int{"fake": 2}, nil)
	m.StartPool()
	ids := waitPooled(t, m, 2)
	if e.warms.Load() != 2 {
		t.Fatalf("%d warm-ups for 2 pooled boxes", e.warms.Load())
	}
	if l, _ := m.List(context.Background(), "alice", ""); len(l) != 0 {
		t.Fatalf("list shows %d boxes before any create", len(l))
	}
	b := mustCreate(t, m, "alice", sandbox.CreateRequest{Name: "web", Env: map[string]string{"GREETING": "hi there"}, TTL: time.Hour})
	if !slices.Contains(ids, b.ID) {
		t.Fatalf("box %s is not one of the pooled %v", b.ID, ids)
	}
	if b.Owner != "alice" || b.Name != "web" || b.Status != sandbox.StatusRunning || b.ExpiresAt.IsZero() || b.Spec.Hostname() != "web" {
		t.Fatalf("claimed box = %+v", b)
	}
	if out, _ := run(t, m, "alice", "web", `echo "$GREETING"`); out != "hi there\n" {
		t.Fatalf("env in a claimed box: %q", out)
	}
	if out, _ := run(t, m, "alice", "web", `echo "$GREETING"`); out != "hi there\n" {
		t.Fatalf("env in a claimed box, second run: %q", out)
	}
	var out bytesBuf
	if _, _, err := m.Exec(context.Background(), "alice", "web", sandbox.ExecRequest{Argv: []string{"sh", "-c", `echo "$GREETING"`}, Env: []string{"GREETING=run"}}, sandbox.ExecIO{Stdout: &out}); err != nil || out.String() != "run\n" {
		t.Fatalf("a run's own env must win: %q, %v", out.String(), err)
	}
	if l, _ := m.List(context.Background(), "alice", ""); len(l) != 1 || l[0].ID != b.ID {
		t.Fatalf("list = %v; want just the claimed box", l)
	}
	refilled := waitPooled(t, m, 2)
	if slices.Contains(refilled, b.ID) {
		t.Fatal("the claimed box is still pooled")
	}
	other := mustCreate(t, m, "alice", sandbox.CreateRequest{MemoryMiB: 256})
	if slices.Contains(refilled, other.ID) {
		t.Fatal("a box of another shape came from the pool")
	}
	if _, err := m.Create(context.Background(), "alice", sandbox.CreateRequest{Name: "web"}); !errors.Is(err, sandbox.ErrAlreadyExists) {
		t.Fatalf("claim with a taken name: %v; want ErrAlreadyExists", err)
	}
	if got := pooled(t, m); len(got) != 2 {
		t.Fatalf("a refused claim changed the pool: %v", got)
	}
}

type bytesBuf struct {
	mu sync.Mutex
	b  []byte
}

func (w *bytesBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	return len(p), nil
}
func (w *bytesBuf) String() string { w.mu.Lock(); defer w.mu.Unlock(); return string(w.b) }

// TestPoolTwoServers: two managers (two stores) on one home, both with a
// pool, create concurrently: every pooled box is handed out at most once,
// and the pool never holds more than its target.
func TestPoolTwoServers(t *testing.T) {
	e := newPoolEnv(t)
	ms := []*sandbox.Manager{e.manager(map[string]int{"fake": 3}, nil), e.manager(map[string]int{"fake": 3}, nil)}
	for _, m := range ms {
		m.StartPool()
	}
	ids := waitPooled(t, ms[0], 3)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := ms[i%2].Create(context.Background(), fmt.Sprintf("o%d", i), sandbox.CreateRequest{})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			seen[b.ID]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	claimed := 0
	for id, n := range seen {
		if n != 1 {
			t.Errorf("box %s handed out %d times", id, n)
		}
		if slices.Contains(ids, id) {
			claimed++
		}
	}
	if len(seen) != 8 || claimed == 0 {
		t.Fatalf("%d distinct boxes, %d from the pool; want 8 and some", len(seen), claimed)
	}
	waitPooled(t, ms[1], 3)
}

// TestPoolImageRebuilt: pooled boxes of an older image build are never
// handed out and are replaced by boxes of the new build.
func TestPoolImageRebuilt(t *testing.T) {
	e := newPoolEnv(t)
	m := e.manager(map[string]int{"fake": 2}, nil)
	m.StartPool()
	old := waitPooled(t, m, 2)
	e.setManifest("build-2")
	b := mustCreate(t, m, "alice", sandbox.CreateRequest{})
	if slices.Contains(old, b.ID) {
		t.Fatal("a box of the old image build was handed out")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := waitPooled(t, m, 2)
		if !slices.ContainsFunc(now, func(id string) bool { return slices.Contains(old, id) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old boxes still pooled: %v (were %v)", now, old)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.world.Running(); n != 3 {
		t.Fatalf("%d fake boxes run; want 3 (2 pooled, 1 claimed): the old ones must be gone", n)
	}
}

// TestPoolRestartAndDrain: a pool survives its server (a new one reattaches
// the live pooled boxes and removes a dead one), and DrainPool destroys it.
func TestPoolRestartAndDrain(t *testing.T) {
	e := newPoolEnv(t)
	m1 := e.manager(map[string]int{"fake": 3}, nil)
	m1.StartPool()
	ids := waitPooled(t, m1, 3)
	m1.Close() // the server goes; its boxes keep running
	(&enginetest.Fake{W: e.world}).Kill(ids[0])
	m2 := e.manager(nil, nil) // a server without --pool still reconciles and claims
	rep := m2.Reconcile(context.Background())
	if rep.Alive != 2 || !slices.Contains(rep.Destroyed, ids[0]) {
		t.Fatalf("reconcile: %+v; want 2 alive, %s destroyed", rep, ids[0])
	}
	if got := pooled(t, m2); !slices.Equal(got, ids[1:]) {
		t.Fatalf("pooled after restart: %v; want %v", got, ids[1:])
	}
	b := mustCreate(t, m2, "bob", sandbox.CreateRequest{})
	if b.ID != ids[1] {
		t.Fatalf("claimed %s; want the oldest pooled %s", b.ID, ids[1])
	}
	if n := m2.DrainPool(context.Background()); n != 1 {
		t.Fatalf("drained %d; want 1", n)
	}
	if got, _ := m2.PoolBoxes(context.Background()); len(got) != 0 {
		t.Fatalf("%d pooled rows after drain", len(got))
	}
	if n := e.world.Running(); n != 1 {
		t.Fatalf("%d fake boxes run; want only the claimed one", n)
	}
}

// TestPoolAdmission: pooled boxes hold memory like any box; an owner's box
// that does not fit evicts a pooled one, and the pool does not grow past
// the limits (its refill error is recorded).
func TestPoolAdmission(t *testing.T) {
	e := newPoolEnv(t)
	m := e.manager(map[string]int{"fake": 2}, func(c *sandbox.Config) { c.MaxMemoryMiB = 1024 })
	m.StartPool()
	ids := waitPooled(t, m, 2)
	b := mustCreate(t, m, "alice", sandbox.CreateRequest{MemoryMiB: 256})
	if slices.Contains(ids, b.ID) {
		t.Fatal("a 256 MiB box came from the pool")
	}
	got := waitPooled(t, m, 1)
	if !slices.Contains(ids, got[0]) {
		t.Fatalf("pool = %v; want one of %v left", got, ids)
	}
	st, err := persist.Open(context.Background(), filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ps, _ := st.Pools(context.Background())
		if len(ps) == 1 && ps[0].LastError != "" {
			if ps[0].Target != 2 {
				t.Fatalf("pool record %+v", ps[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refill error recorded: %+v", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPooledBoxesInvisible (attack): no owner reaches a pooled box, by id,
// id prefix or listing, whatever the call; the box stays pooled.
func TestPooledBoxesInvisible(t *testing.T) {
	e := newPoolEnv(t)
	m := e.manager(map[string]int{"fake": 1}, nil)
	m.StartPool()
	id := waitPooled(t, m, 1)[0]
	ctx := context.Background()
	for _, owner := range []string{"alice", "local", ""} {
		for _, ref := range []string{id, id[:8]} {
			calls := map[string]func() error{
				"get": func() error { _, err := m.Get(ctx, owner, ref); return err },
				"exec": func() error {
					_, _, err := m.Exec(ctx, owner, ref, sandbox.ExecRequest{Argv: []string{"true"}}, sandbox.ExecIO{})
					return err
				},
				"stop":    func() error { _, err := m.Stop(ctx, owner, ref); return err },
				"destroy": func() error { _, err := m.Destroy(ctx, owner, ref); return err },
			}
			for name, call := range calls {
				if err := call(); !errors.Is(err, sandbox.ErrNotFound) {
					t.Errorf("%s(%q, %q) = %v; want ErrNotFound", name, owner, ref, err)
				}
			}
		}
		if l, _ := m.List(ctx, owner, ""); len(l) != 0 {
			t.Errorf("List(%q) shows %d boxes", owner, len(l))
		}
	}
	if got := pooled(t, m); !slices.Equal(got, []string{id}) {
		t.Fatalf("pool after the calls: %v; want [%s]", got, id)
	}
	if _, err := m.Create(ctx, persist.PoolOwner, sandbox.CreateRequest{}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Fatalf("Create for the pool's owner: %v; want ErrInvalidArgument", err)
	}
}
