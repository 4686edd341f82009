package jail_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// TestJailSnapshotClone: a snapshot holds the files written before it (also
// those still in the page cache), the box keeps running (its processes are
// thawed), and clones start from it with their own identity, id range and
// disk, independent of the parent and of each other.
func TestJailSnapshotClone(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	ctx := context.Background()
	p, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "parent", DiskMiB: 512})
	if err != nil {
		t.Fatal(err)
	}
	// A background writer that must survive the freeze (it renames each
	// tick into place: a reader never sees a truncated file), and a file
	// that is only in the page cache when the snapshot is taken.
	// (The writer has ticked once before the snapshot: under load it may
	// not have started yet, and a missing tick is no sign of a freeze.)
	shIn(t, m, p.ID, "(while :; do date +%s%N > /root/tick.new; mv /root/tick.new /root/tick; sleep 0.05; done) >/dev/null 2>&1 & echo before > /root/state; head -c 3000000 /dev/urandom > /root/blob; md5sum /root/blob > /root/blob.md5; until [ -e /root/tick ]; do sleep 0.01; done")
	sn, err := m.SnapshotBox(ctx, "t", "parent", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if sn.IncludesMemory || sn.Bytes <= 0 || sn.Engine != "jail" {
		t.Fatalf("snapshot %+v", sn)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/freezer/boxlite", p.ID+".snapshot")); err == nil {
		t.Error("the snapshot's freezer cgroup is left")
	}
	t1 := shIn(t, m, p.ID, "cat /root/tick; sleep 0.3; cat /root/tick").stdout
	if f := strings.Fields(t1); len(f) != 2 || f[0] == f[1] {
		t.Fatalf("the parent's background process does not run after the snapshot: %q", t1)
	}
	shIn(t, m, p.ID, "echo after > /root/state")

	var clones []*sandbox.Box
	for i := range 2 {
		c, err := m.Create(ctx, "t", sandbox.CreateRequest{FromSnapshot: "s1"})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		clones = append(clones, c)
		out := shIn(t, m, c.ID, "cat /root/state; md5sum -c --quiet /root/blob.md5 && echo blob-ok; hostname; stat -c %u /root/state; touch /root/x && echo writable").stdout
		want := "before\nblob-ok\n" + c.Spec.Hostname() + "\n0\nwritable\n"
		if out != want {
			t.Fatalf("clone %d sees %q, want %q", i, out, want)
		}
	}
	shIn(t, m, clones[0].ID, "echo clone0 > /root/state")
	if got := shIn(t, m, clones[1].ID, "cat /root/state").stdout; got != "before\n" {
		t.Fatalf("clone 1 sees clone 0's write: %q", got)
	}
	if got := shIn(t, m, p.ID, "cat /root/state").stdout; got != "after\n" {
		t.Fatalf("the parent sees %q", got)
	}
	// A jail clone owns its disk: the snapshot can go while it lives.
	if _, err := m.DeleteSnapshot(ctx, "t", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "t", clones[1].ID); err != nil {
		t.Fatal(err)
	}
	if got := shIn(t, m, clones[1].ID, "cat /root/state").stdout; got != "before\n" {
		t.Fatalf("clone after restart without its snapshot: %q", got)
	}
}
