package persist

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func newSnap(owner, name string) *Snapshot {
	return &Snapshot{Owner: owner, Name: name, BoxID: NewID(), Engine: "fake", Image: "default", Status: SnapshotCreating}
}

func TestSnapshotLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	sn := newSnap("alice", "base")
	if err := s.InsertSnapshot(ctx, sn, 0); err != nil {
		t.Fatal(err)
	}
	// A creating snapshot is invisible to its owner.
	if _, err := s.ResolveSnapshot(ctx, "alice", "base"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resolve creating: %v, want ErrNotFound", err)
	}
	if l, _ := s.ListSnapshots(ctx, "alice"); len(l) != 0 {
		t.Fatalf("list while creating: %d rows", len(l))
	}
	if err := s.FinishSnapshot(ctx, sn.ID, 1234, []string{"disk.qcow2", "memory"}, true, 0); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{sn.ID, "base", sn.ID[:10]} {
		got, err := s.ResolveSnapshot(ctx, "alice", ref)
		if err != nil {
			t.Fatalf("resolve %q: %v", ref, err)
		}
		if got.ID != sn.ID || got.Bytes != 1234 || !got.IncludesMemory || len(got.Files) != 2 || got.Status != SnapshotReady {
			t.Fatalf("resolve %q: %+v", ref, got)
		}
	}
	// Other owners see nothing.
	if _, err := s.ResolveSnapshot(ctx, "bob", sn.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob resolves alice's snapshot: %v", err)
	}
	// Finishing twice is refused (the row is no longer creating).
	if err := s.FinishSnapshot(ctx, sn.ID, 1, nil, false, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second finish: %v", err)
	}
	if err := s.MarkSnapshotDeleting(ctx, sn.ID, nil); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.ListSnapshots(ctx, "alice"); len(l) != 0 {
		t.Fatalf("list while deleting: %d rows", len(l))
	}
	if l, _ := s.ListSnapshots(ctx, ""); len(l) != 1 || l[0].Status != SnapshotDeleting {
		t.Fatalf("list all: %+v", l)
	}
	if err := s.DeleteSnapshot(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, sn.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestSnapshotNamesPerOwner(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	a := newSnap("alice", "x")
	if err := s.InsertSnapshot(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	err := s.InsertSnapshot(ctx, newSnap("alice", "x"), 0)
	if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), a.ID) {
		t.Fatalf("duplicate name: %v (want ErrNameTaken naming %s)", err, a.ID)
	}
	if err := s.InsertSnapshot(ctx, newSnap("bob", "x"), 0); err != nil {
		t.Fatalf("same name, other owner: %v", err)
	}
	for range 2 { // unnamed snapshots never collide
		if err := s.InsertSnapshot(ctx, newSnap("alice", ""), 0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSnapshotQuota(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	a := newSnap("alice", "")
	if err := s.InsertSnapshot(ctx, a, 1000); err != nil {
		t.Fatal(err)
	}
	// Over the quota at finish: refused, the row stays creating.
	if err := s.FinishSnapshot(ctx, a.ID, 1001, nil, false, 1000); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("finish over quota: %v", err)
	}
	if got, _ := s.GetSnapshot(ctx, a.ID); got.Status != SnapshotCreating {
		t.Fatalf("status after refused finish: %s", got.Status)
	}
	if err := s.FinishSnapshot(ctx, a.ID, 600, nil, false, 1000); err != nil {
		t.Fatal(err)
	}
	b := newSnap("bob", "")
	if err := s.InsertSnapshot(ctx, b, 1000); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishSnapshot(ctx, b.ID, 500, nil, false, 1000); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("second snapshot over the shared quota: %v", err)
	}
	if err := s.FinishSnapshot(ctx, b.ID, 400, nil, false, 1000); err != nil {
		t.Fatal(err)
	}
	// Full: a new one is refused before anything is written.
	if err := s.InsertSnapshot(ctx, newSnap("carol", ""), 1000); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("insert when full: %v", err)
	}
	if n, _ := s.SnapshotBytes(ctx); n != 1000 {
		t.Fatalf("SnapshotBytes = %d", n)
	}
}

func TestSnapshotDependants(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	sn := newSnap("alice", "")
	if err := s.InsertSnapshot(ctx, sn, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishSnapshot(ctx, sn.ID, 1, nil, false, 0); err != nil {
		t.Fatal(err)
	}
	mk := func(status, spec string) *Box {
		b := newBox("alice", "")
		b.Status, b.Spec = status, []byte(spec)
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	transient := []string{"creating"}
	copied := mk("running", `{"from_snapshot":{"id":"`+sn.ID+`","backed":false}}`) // a copy: independent
	mk("running", `{"from_snapshot":{"id":"other","backed":true}}`)
	if deps, _ := s.SnapshotDependants(ctx, sn.ID, transient); len(deps) != 0 {
		t.Fatalf("dependants %v, want none", deps)
	}
	making := mk("creating", `{"from_snapshot":{"id":"`+sn.ID+`"}}`)
	backed := mk("stopped", `{"from_snapshot":{"id":"`+sn.ID+`","backed":true}}`)
	deps, err := s.SnapshotDependants(ctx, sn.ID, transient)
	if err != nil || len(deps) != 2 {
		t.Fatalf("dependants %v, %v; want %s and %s", deps, err, making.ID, backed.ID)
	}
	err = s.MarkSnapshotDeleting(ctx, sn.ID, transient)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), backed.ID) {
		t.Fatalf("delete with dependants: %v", err)
	}
	s.Delete(ctx, making.ID)
	s.Delete(ctx, backed.ID)
	if err := s.MarkSnapshotDeleting(ctx, sn.ID, transient); err != nil {
		t.Fatalf("delete after dependants went: %v (copy %s is independent)", err, copied.ID)
	}
}

// TestSnapshotsSurviveReopen: snapshots are in the file, not the process.
func TestSnapshotsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "boxlite.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	sn := newSnap("alice", "keep")
	if err := s.InsertSnapshot(ctx, sn, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishSnapshot(ctx, sn.ID, 7, []string{"disk.ext4"}, false, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openTest(t, path)
	got, err := s2.ResolveSnapshot(ctx, "alice", "keep")
	if err != nil || got.Bytes != 7 || got.Files[0] != "disk.ext4" {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}
