package sandbox_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// remoteFake is a Remote engine over the fake: its "cluster" is a map
// several managers (servers with homes of their own) share, as servers
// share a Kubernetes cluster. A test double at an interface we own
// (sandbox.Remote); the real engine runs on a real cluster in sandbox/k8s.
type remoteFake struct {
	*enginetest.Fake
	c *fakeCluster
}

type fakeCluster struct {
	mu    sync.Mutex
	boxes map[string]sandbox.RemoteBox // box id → box
	sock  map[string]string            // box id → where its agent listens
	hang  bool                         // RemoteBoxes blocks until its ctx ends
}

func (r *remoteFake) Name() string  { return "remote" }
func (r *remoteFake) CanStop() bool { return false }
func (r *remoteFake) ImageRef(ref string) (string, error) {
	if ref == "" || ref == "default" {
		return "registry.test/box:1", nil
	}
	return ref, nil
}

func (r *remoteFake) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Handle, error) {
	h, err := r.Fake.Start(ctx, spec)
	if err != nil {
		return h, err
	}
	h.Engine = r.Name()
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	r.c.boxes[spec.ID] = sandbox.RemoteBox{ID: spec.ID, Name: spec.Name, Owner: spec.Owner, Spec: spec, Handle: h, Running: true, CreatedAt: time.Now()}
	r.c.sock[spec.ID] = spec.Socket
	return h, nil
}

func (r *remoteFake) Dial(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) (net.Conn, error) {
	r.c.mu.Lock()
	sock := r.c.sock[spec.ID]
	r.c.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "unix", sock)
}

func (r *remoteFake) Destroy(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	r.c.mu.Lock()
	sock := r.c.sock[spec.ID]
	delete(r.c.boxes, spec.ID)
	r.c.mu.Unlock()
	spec.Socket = sock
	return r.Fake.Destroy(ctx, spec, h)
}

func (r *remoteFake) RemoteBoxes(ctx context.Context, owner string) ([]sandbox.RemoteBox, error) {
	r.c.mu.Lock()
	hang := r.c.hang
	var out []sandbox.RemoteBox
	for _, b := range r.c.boxes {
		if owner == "" || b.Owner == owner {
			out = append(out, b)
		}
	}
	r.c.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return out, nil
}

// deleteBehindBack removes a box from the cluster, as `kubectl delete pod` would.
func (c *fakeCluster) deleteBehindBack(w *enginetest.World, id string) {
	c.mu.Lock()
	delete(c.boxes, id)
	c.mu.Unlock()
	(&enginetest.Fake{W: w}).Kill(id)
}

func remoteServer(t *testing.T, w *enginetest.World, c *fakeCluster, cfg sandbox.Config) *sandbox.Manager {
	t.Helper()
	home := t.TempDir()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Home, cfg.Store = home, st
	cfg.Engines = append(cfg.Engines, &remoteFake{Fake: &enginetest.Fake{W: w, EngineName: "remote"}, c: c})
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	m, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	return m
}

func listed(t *testing.T, m *sandbox.Manager, owner string) map[string]*sandbox.Box {
	t.Helper()
	bs, err := m.List(context.Background(), owner, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*sandbox.Box{}
	for _, b := range bs {
		out[b.ID] = b
	}
	return out
}

// Two servers with homes of their own share a cluster: a box made through
// one is listed and used through the other, only by its owner; a box
// deleted behind their back shows as gone on both.
func TestRemoteBoxesAreSharedThroughTheCluster(t *testing.T) {
	leakCheck(t)
	w, c := enginetest.NewWorld(), &fakeCluster{boxes: map[string]sandbox.RemoteBox{}, sock: map[string]string{}}
	t.Cleanup(w.KillAll)
	ctx := context.Background()
	a, b := remoteServer(t, w, c, sandbox.Config{}), remoteServer(t, w, c, sandbox.Config{})
	box, err := a.Create(ctx, "alice", sandbox.CreateRequest{Name: "work"})
	if err != nil {
		t.Fatal(err)
	}
	if box.Image != "registry.test/box:1" || !box.Spec.RuntimeImageConfig {
		t.Errorf("remote box image %q runtime config %v (want the engine's reference, applied by its runtime)", box.Image, box.Spec.RuntimeImageConfig)
	}
	// Another server finds it by name before any list (a missed lookup syncs).
	got, err := b.Get(ctx, "alice", "work")
	if err != nil || got.ID != box.ID || got.Status != sandbox.StatusRunning {
		t.Fatalf("server B's lookup of alice's box: %+v %v", got, err)
	}
	res, _, err := b.Exec(ctx, "alice", "work", sandbox.ExecRequest{Argv: []string{"/bin/echo", "hi"}}, sandbox.ExecIO{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec through server B: %+v %v", res, err)
	}
	if _, err := b.Get(ctx, "bob", box.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("bob's lookup of alice's box through server B: %v (want not found)", err)
	}
	if len(listed(t, b, "bob")) != 0 {
		t.Error("bob lists alice's box")
	}
	// The name is taken on B now too.
	if _, err := b.Create(ctx, "alice", sandbox.CreateRequest{Name: "work"}); !errors.Is(err, sandbox.ErrAlreadyExists) {
		t.Errorf("second create of the name through B: %v", err)
	}

	c.deleteBehindBack(w, box.ID)
	for _, m := range []*sandbox.Manager{a, b} {
		enginetest.Until(t, "the deleted box is gone from the list", func() bool { return listed(t, m, "alice")[box.ID] == nil })
	}
	if _, err := b.Get(ctx, "alice", "work"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("lookup of the deleted box: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.Home(), "boxes", box.ID)); !os.IsNotExist(err) {
		t.Errorf("the gone box's directory is left on server A: %v", err)
	}
}

// A cluster that does not answer leaves list_boxes its cached rows, in
// bounded time.
func TestRemoteListingThatHangsShowsTheCache(t *testing.T) {
	leakCheck(t)
	defer sandbox.SetRemoteListTimeout(200 * time.Millisecond)()
	w, c := enginetest.NewWorld(), &fakeCluster{boxes: map[string]sandbox.RemoteBox{}, sock: map[string]string{}}
	t.Cleanup(w.KillAll)
	a := remoteServer(t, w, c, sandbox.Config{})
	box, err := a.Create(context.Background(), "alice", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.hang = true
	c.mu.Unlock()
	done := make(chan map[string]*sandbox.Box, 1)
	go func() { done <- listed(t, a, "alice") }()
	select {
	case got := <-done:
		if got[box.ID] == nil {
			t.Error("the cached box is missing while the cluster does not answer")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("list_boxes hung on a cluster that does not answer")
	}
}

// Remote boxes hold none of this host's memory, cannot be stopped without
// keeping their files (CanStop false), and the idle reaper leaves them.
func TestRemoteBoxesAdmissionAndStop(t *testing.T) {
	leakCheck(t)
	w, c := enginetest.NewWorld(), &fakeCluster{boxes: map[string]sandbox.RemoteBox{}, sock: map[string]string{}}
	t.Cleanup(w.KillAll)
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := remoteServer(t, w, c, sandbox.Config{MaxMemoryMiB: 600, IdleTimeout: time.Minute, Now: clock,
		Engines: []sandbox.Engine{&enginetest.Fake{W: w}}})
	for range 2 {
		if _, err := m.Create(ctx, "alice", sandbox.CreateRequest{Engine: "remote", MemoryMiB: 1024}); err != nil {
			t.Fatalf("a remote box was refused by this host's memory limit: %v", err)
		}
	}
	local, err := m.Create(ctx, "alice", sandbox.CreateRequest{Engine: "fake", MemoryMiB: 512})
	if err != nil {
		t.Fatalf("a local box beside remote ones: %v (remote boxes counted against host memory?)", err)
	}
	if _, err := m.Create(ctx, "alice", sandbox.CreateRequest{Engine: "fake", MemoryMiB: 512}); !errors.Is(err, sandbox.ErrResourceExhausted) {
		t.Errorf("a second local box over the host limit: %v (want refused)", err)
	}
	bs := listed(t, m, "alice")
	var remote *sandbox.Box
	for _, b := range bs {
		if b.Engine == "remote" {
			remote = b
		}
	}
	if _, err := m.Stop(ctx, "alice", remote.ID); !errors.Is(err, sandbox.ErrFailedPrecondition) {
		t.Errorf("stop of a remote box that cannot keep its files: %v (want refused)", err)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	rep := m.Reap(ctx)
	for _, id := range rep.Stopped {
		if id != local.ID {
			t.Errorf("the idle reaper stopped remote box %s", id)
		}
	}
	if got, _ := m.Get(ctx, "alice", remote.ID); got.Status != sandbox.StatusRunning {
		t.Errorf("remote box after the reaper: %s", got.Status)
	}
}
