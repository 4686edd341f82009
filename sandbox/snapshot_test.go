package sandbox_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// snapManager is env.manager with a snapshot quota.
func (e *env) snapManager(quota int64) *sandbox.Manager {
	e.t.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := sandbox.New(sandbox.Config{
		Home: e.home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: e.world}},
		MaxSnapshotBytes: quota,
		Now:              func() time.Time { return time.UnixMilli(e.now.Load()) },
		BootID:           func() (string, error) { return e.boot.Load().(string), nil },
		Logger:           slog.New(slog.NewTextHandler(tWriter{e.t}, nil)),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Close(); st.Close() })
	return m
}

func writeDisk(t *testing.T, b *sandbox.Box, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.Spec.BoxDir, enginetest.FakeDisk), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readDisk(t *testing.T, b *sandbox.Box) string {
	t.Helper()
	c, err := os.ReadFile(filepath.Join(b.Spec.BoxDir, enginetest.FakeDisk))
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}

func snapDirs(t *testing.T, home string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(home, "snapshots"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestSnapshotAndClone(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	m := e.snapManager(0)
	parent := mustCreate(t, m, "alice", sandbox.CreateRequest{Name: "p", Env: map[string]string{"A": "1"}})
	writeDisk(t, parent, "v1")
	sn, err := m.SnapshotBox(ctx, "alice", "p", "base")
	if err != nil {
		t.Fatal(err)
	}
	if sn.BoxID != parent.ID || sn.Name != "base" || sn.Engine != "fake" || sn.IncludesMemory || sn.Bytes <= 0 {
		t.Fatalf("snapshot %+v", sn)
	}
	if _, err := m.SnapshotBox(ctx, "alice", "p", "base"); !errors.Is(err, sandbox.ErrAlreadyExists) || !strings.Contains(sandbox.PublicMessage(err), sn.ID) {
		t.Fatalf("duplicate snapshot name: %v", err)
	}
	writeDisk(t, parent, "v2") // after the snapshot: not in it

	var clones []*sandbox.Box
	for i := range 3 {
		c, err := m.Create(ctx, "alice", sandbox.CreateRequest{FromSnapshot: "base", Env: map[string]string{"B": "2"}})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		if c.ID == parent.ID || c.Spec.FromSnapshot == nil || c.Spec.FromSnapshot.ID != sn.ID {
			t.Fatalf("clone %+v", c)
		}
		if c.Spec.Env["A"] != "1" || c.Spec.Env["B"] != "2" {
			t.Fatalf("clone env %v: want the snapshot's and its own", c.Spec.Env)
		}
		if got := readDisk(t, c); got != "v1" {
			t.Fatalf("clone %d disk %q, want v1", i, got)
		}
		clones = append(clones, c)
	}
	// Independent: writes to one clone reach neither the parent nor the others.
	writeDisk(t, clones[0], "mine")
	if readDisk(t, parent) != "v2" || readDisk(t, clones[1]) != "v1" {
		t.Fatal("a clone's disk is shared")
	}
	// Shape fixed by the snapshot.
	if _, err := m.Create(ctx, "alice", sandbox.CreateRequest{FromSnapshot: "base", DiskMiB: 8192}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Fatalf("clone with another disk size: %v", err)
	}
	// Owner-scoped.
	if _, err := m.Create(ctx, "bob", sandbox.CreateRequest{FromSnapshot: sn.ID}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("bob clones alice's snapshot: %v", err)
	}
	if l, _ := m.ListSnapshots(ctx, "bob"); len(l) != 0 {
		t.Fatalf("bob lists %d snapshots", len(l))
	}
	if _, err := m.DeleteSnapshot(ctx, "bob", sn.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("bob deletes alice's snapshot: %v", err)
	}
	// Survives a restart; copies do not hold it.
	m2 := e.snapManager(0)
	l, err := m2.ListSnapshots(ctx, "alice")
	if err != nil || len(l) != 1 || l[0].ID != sn.ID {
		t.Fatalf("after restart: %v %v", l, err)
	}
	if _, err := m2.DeleteSnapshot(ctx, "alice", "base"); err != nil {
		t.Fatalf("delete with only copying clones: %v", err)
	}
	if d := snapDirs(t, e.home); len(d) != 0 {
		t.Fatalf("snapshot files left: %v", d)
	}
	if readDisk(t, clones[2]) != "v1" {
		t.Fatal("clone lost its disk with the snapshot")
	}
}

func TestSnapshotOfStoppedBoxRefused(t *testing.T) {
	e := newEnv(t)
	m := e.snapManager(0)
	b := mustCreate(t, m, "alice", sandbox.CreateRequest{})
	if _, err := m.Stop(context.Background(), "alice", b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SnapshotBox(context.Background(), "alice", b.ID, ""); !errors.Is(err, sandbox.ErrFailedPrecondition) {
		t.Fatalf("snapshot of a stopped box: %v", err)
	}
}

func TestDeleteSnapshotRefusedWhileBacked(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.world.Snapshots.Backed = true
	m := e.snapManager(0)
	p := mustCreate(t, m, "alice", sandbox.CreateRequest{})
	sn, err := m.SnapshotBox(ctx, "alice", p.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Create(ctx, "alice", sandbox.CreateRequest{FromSnapshot: sn.ID})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.DeleteSnapshot(ctx, "alice", sn.ID)
	if !errors.Is(err, sandbox.ErrFailedPrecondition) || !strings.Contains(sandbox.PublicMessage(err), c.ID) {
		t.Fatalf("delete while a clone is backed by it: %v (want failed precondition naming %s)", err, c.ID)
	}
	if _, err := m.Stop(ctx, "alice", c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DeleteSnapshot(ctx, "alice", sn.ID); !errors.Is(err, sandbox.ErrFailedPrecondition) {
		t.Fatalf("delete while a stopped clone is backed by it: %v", err)
	}
	if _, err := m.Destroy(ctx, "alice", c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DeleteSnapshot(ctx, "alice", sn.ID); err != nil {
		t.Fatalf("delete after the clone went: %v", err)
	}
	if _, err := m.Create(ctx, "alice", sandbox.CreateRequest{FromSnapshot: sn.ID}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("clone of a deleted snapshot: %v", err)
	}
}

func TestSnapshotQuotaAndFailureLeaveNothing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	m := e.snapManager(10_000)
	p := mustCreate(t, m, "alice", sandbox.CreateRequest{})
	writeDisk(t, p, strings.Repeat("x", 64<<10)) // more than the quota
	if _, err := m.SnapshotBox(ctx, "alice", p.ID, "big"); !errors.Is(err, sandbox.ErrResourceExhausted) {
		t.Fatalf("snapshot over quota: %v", err)
	}
	e.world.Snapshots.Fail = errors.New("disk on fire")
	writeDisk(t, p, "small")
	if _, err := m.SnapshotBox(ctx, "alice", p.ID, "broken"); !errors.Is(err, sandbox.ErrInternal) {
		t.Fatalf("failing snapshot: %v", err)
	}
	if d := snapDirs(t, e.home); len(d) != 0 {
		t.Fatalf("files of refused snapshots left: %v", d)
	}
	st, _ := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	defer st.Close()
	if rows, _ := st.ListSnapshots(ctx, ""); len(rows) != 0 {
		t.Fatalf("rows of refused snapshots left: %d", len(rows))
	}
	e.world.Snapshots.Fail = nil
	if _, err := m.SnapshotBox(ctx, "alice", p.ID, "ok"); err != nil {
		t.Fatalf("small snapshot within quota: %v", err)
	}
}

// TestReconcileSnapshots: an unfinished snapshot whose maker is gone is
// removed with its files; one being made right now is left alone.
func TestReconcileSnapshots(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	m := e.snapManager(0)
	p := mustCreate(t, m, "alice", sandbox.CreateRequest{})

	// A second server reconciles while the first is writing a snapshot.
	other := e.snapManager(0)
	var during sandbox.ReconcileReport
	e.world.Snapshots.Hook = func(dir string) { during = other.ReconcileSnapshots(ctx) }
	sn, err := m.SnapshotBox(ctx, "alice", p.ID, "live")
	if err != nil {
		t.Fatal(err)
	}
	e.world.Snapshots.Hook = nil
	if len(during.Snapshots) != 0 {
		t.Fatalf("reconcile removed a snapshot being made: %v", during.Snapshots)
	}

	// A server died mid-snapshot: a creating row and a temporary directory;
	// another left a directory with no row.
	st, _ := persist.Open(ctx, filepath.Join(e.home, "boxlite.db"))
	defer st.Close()
	dead := &persist.Snapshot{Owner: "alice", BoxID: p.ID, Engine: "fake", Image: "default", Status: persist.SnapshotCreating}
	if err := st.InsertSnapshot(ctx, dead, 0); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{".tmp-" + dead.ID, persist.NewID()} {
		if err := os.MkdirAll(filepath.Join(e.home, "snapshots", d), 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(e.home, "snapshots", d, "disk"), []byte("half"), 0o600)
	}
	rep := e.snapManager(0).Reconcile(ctx)
	if len(rep.Snapshots) != 2 || !slices.Contains(rep.Snapshots, dead.ID) {
		t.Fatalf("reconcile removed %v, want the dead snapshot and the orphan", rep.Snapshots)
	}
	if d := snapDirs(t, e.home); len(d) != 1 || d[0] != sn.ID {
		t.Fatalf("snapshot dirs after reconcile: %v, want only %s", d, sn.ID)
	}
	if _, err := st.GetSnapshot(ctx, dead.ID); !errors.Is(err, persist.ErrNotFound) {
		t.Fatalf("dead snapshot's row: %v", err)
	}
}
