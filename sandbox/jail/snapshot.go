package jail

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Snapshots of a jail box are its disk only (no memory): the box's
// processes are frozen (cgroup freezer), the box's file system is synced
// from the host (syncfs through the jail's root), and disk.ext4 is copied
// (a reflink where the home's file system has them, else a sparse copy) and
// thawed. The copy is what the disk held at that instant; mounting it
// replays the ext4 journal like after a power cut, with nothing lost that
// was written before the snapshot. A box made from the snapshot starts
// with its own copy of that file, moved to its own id range at start.

var _ sandbox.Snapshotter = (*Engine)(nil)

// ClonesShareFiles implements sandbox.Snapshotter: clones own copies.
func (e *Engine) ClonesShareFiles() bool { return false }

// Snapshot implements sandbox.Snapshotter.
func (e *Engine) Snapshot(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, dir string) (bool, error) {
	st, err := decodeState(h)
	if err != nil {
		return false, err
	}
	if !st.Proc.Alive() {
		return false, sandbox.Errorf(sandbox.ErrFailedPrecondition, "box %s is not running", spec.ID)
	}
	disk := filepath.Join(spec.BoxDir, diskImage)
	if _, err := os.Stat(disk); err != nil {
		return false, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "box %s keeps its files the way older versions did (no disk of its own) and cannot be snapshotted; make a new box", spec.ID)
	}
	t0 := time.Now()
	thaw, err := freeze(ctx, spec.ID, st)
	if err != nil {
		return false, fmt.Errorf("freezing the box: %w", err)
	}
	defer thaw()
	tFrozen := time.Now()
	// The box's writes may sit in the page cache of its file system: flush
	// them to the disk image. The jail's root is an overlay whose upper
	// layer is that file system; syncfs on an overlay syncs its upper.
	root, err := os.OpenFile("/proc/"+strconv.Itoa(st.Proc.PID)+"/root", os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return false, fmt.Errorf("opening the box's root: %w", err)
	}
	err = unix.Syncfs(int(root.Fd()))
	root.Close()
	if err != nil {
		return false, fmt.Errorf("syncing the box's disk: %w", err)
	}
	reflink, err := sandbox.CopyFileCoW(ctx, disk, filepath.Join(dir, diskImage))
	if err != nil {
		return false, fmt.Errorf("copying the box's disk: %w", err)
	}
	e.log.Info("jail snapshot", "box_id", spec.ID, "reflink", reflink, "t_freeze", tFrozen.Sub(t0), "t_frozen", time.Since(tFrozen))
	return false, nil
}

// cloneDisk gives a box made from a snapshot its copy of the snapshot's
// disk at its first start (written beside its name, then renamed).
func cloneDisk(ctx context.Context, spec sandbox.Spec) error {
	if spec.FromSnapshot == nil {
		return nil
	}
	disk := filepath.Join(spec.BoxDir, diskImage)
	if _, err := os.Stat(disk); err == nil {
		return nil
	}
	tmp := disk + ".clone"
	os.Remove(tmp)
	if _, err := sandbox.CopyFileCoW(ctx, filepath.Join(spec.FromSnapshot.Dir, diskImage), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, disk)
}

// freeze stops every process of the box and returns the function that
// lets them run again. cgroup v2 freezes the box's cgroup. cgroup v1 has
// the freezer as a hierarchy of its own, which the box's cgroups do not
// include: its processes are moved into a freezer cgroup made for the
// snapshot (children forked meanwhile are caught by rechecking once it is
// frozen) and moved out again by thaw.
func freeze(ctx context.Context, id string, st state) (thaw func(), err error) {
	if st.CgroupV2 {
		dir := filepath.Join(cgroups.Root, cgroups.Parent, id)
		if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("1"), 0o644); err != nil {
			return nil, err
		}
		thaw = func() { thawBox(id, true) }
		if err := waitFor(ctx, func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "cgroup.events"))
			return strings.Contains(string(b), "frozen 1")
		}); err != nil {
			thaw()
			return nil, err
		}
		return thaw, nil
	}
	root := filepath.Join(cgroups.Root, "freezer")
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		return nil, errors.New("no cgroup v1 freezer hierarchy")
	}
	dir := filepath.Join(root, cgroups.Parent, id+".snapshot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	thaw = func() { thawBox(id, false) }
	move := func() (int, error) {
		in := map[int]bool{}
		for _, p := range procsOf([]string{dir}) {
			in[p] = true
		}
		moved := 0
		for _, pid := range procsOf(st.Cgroups) {
			if in[pid] {
				continue
			}
			err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				return moved, err
			}
			moved++
		}
		return moved, nil
	}
	if _, err := move(); err != nil {
		thaw()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("FROZEN"), 0o644); err != nil {
		thaw()
		return nil, err
	}
	// Processes forked by ones not yet moved join late: move them (into a
	// frozen cgroup, which freezes them) until none is left outside.
	for range 100 {
		n, err := move()
		if err != nil {
			thaw()
			return nil, err
		}
		if err := waitFor(ctx, func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "freezer.state"))
			return strings.TrimSpace(string(b)) == "FROZEN"
		}); err != nil {
			thaw()
			return nil, err
		}
		if n == 0 {
			return thaw, nil
		}
	}
	thaw()
	return nil, errors.New("the box's processes kept forking; could not freeze them")
}

// thawBox lets a box frozen by a snapshot run again; also what Recover
// does for a box whose server died during a snapshot. Idempotent.
func thawBox(id string, v2 bool) {
	if v2 {
		os.WriteFile(filepath.Join(cgroups.Root, cgroups.Parent, id, "cgroup.freeze"), []byte("0"), 0o644)
		return
	}
	root := filepath.Join(cgroups.Root, "freezer")
	dir := filepath.Join(root, cgroups.Parent, id+".snapshot")
	if _, err := os.Stat(dir); err != nil {
		return
	}
	os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0o644)
	for _, pid := range procsOf([]string{dir}) {
		os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	}
	for range 50 {
		if err := syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procsOf lists the processes in the cgroup directories.
func procsOf(dirs []string) []int {
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// waitFor polls cond every millisecond or so until it holds, for at most 10 s.
func waitFor(ctx context.Context, cond func() bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for d := 500 * time.Microsecond; !cond(); d = min(d*2, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}
