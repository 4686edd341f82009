package jail

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/idshift"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// The image's rootfs/ keeps its real owners (root) and no box's id range
// owns it. Each box sees it through an idmapped, read-only mount that shows
// the files as owned by the box's own range, so root in the box is root of
// its files and nothing in any box can change what other boxes run. Where
// the kernel cannot idmap (before 5.12, or the file system lacks support),
// each box gets its own copy of the image with shifted owners instead:
// equally safe, slower to create and larger on disk. Doctor says which.

// userns returns a user namespace that maps ids 0..65535 to base onwards,
// as the box's own namespace does: an idmapped mount made with it shows
// image files the way the box must see them. It is held by a short-lived
// `boxlite-guest --hold` started from agent (a descriptor, as the jail
// itself is started) and stays alive as long as the returned file is open.
func userns(agent *os.File, base uint32) (*os.File, error) {
	cmd := exec.Command("/proc/self/fd/3", "--hold")
	cmd.Args[0] = "boxlite-guest-hold"
	cmd.ExtraFiles = []*os.File{agent}
	cmd.Env = []string{}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: idshift.Size}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: idshift.Size}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		in.Close()
		return nil, fmt.Errorf("starting the user namespace holder: %w", err)
	}
	// The holder cannot exit before stdin closes, and it is not reaped
	// before Wait, so its pid names it until then.
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	in.Close()
	werr := cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("the image's guest agent cannot hold a user namespace (%v; exit: %v): rebuild the image with `boxlite-mcp image build`", err, werr)
	}
	return ns, nil
}

// idmapLower attaches an idmapped, read-only view of lower at target (an
// empty directory in the private mount base). The caller detaches it once
// the overlay that uses it is mounted.
func idmapLower(lower, target string, ns *os.File) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, lower, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", lower, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("idmapping %s: %w", lower, err)
	}
	if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching the idmapped image at %s: %w", target, err)
	}
	return nil
}

// probeIDMap reports whether this host can give a box an overlay root over
// an idmapped image: it mounts one over a scratch directory beside the
// images (on their file system) and takes it down again.
func probeIDMap(agent *os.File, imagesDir string) error {
	ns, err := userns(agent, sandbox.IDRangeFirst)
	if err != nil {
		return err
	}
	defer ns.Close()
	scratch, err := os.MkdirTemp(imagesDir, ".idmap-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	for _, d := range []string{"lower", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(scratch, d), 0o755); err != nil {
			return err
		}
	}
	mp, err := mountRoot(filepath.Base(scratch), filepath.Join(scratch, "lower"), filepath.Join(scratch, "upper"), filepath.Join(scratch, "work"), ns)
	if err != nil {
		return err
	}
	unmountRoot(mp)
	return nil
}

// copiedLower is the fallback for hosts without idmapped mounts: a copy of
// the image's rootfs in the box directory, owned by the box's range. A
// marker written last makes an interrupted copy start over.
func copiedLower(boxDir, rootfs string, base uint32) (string, error) {
	dst := filepath.Join(boxDir, "lower")
	done := filepath.Join(boxDir, "lower.done")
	if b, err := os.ReadFile(done); err == nil && string(b) == strconv.FormatUint(uint64(base), 10) {
		return dst, nil
	}
	os.Remove(done)
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if out, err := exec.Command("cp", "-a", "--reflink=auto", rootfs, dst).CombinedOutput(); err != nil {
		os.RemoveAll(dst)
		return "", fmt.Errorf("copying the image for the box: %v: %s", err, out)
	}
	if _, _, err := idshift.Tree(dst, 0, base); err != nil {
		os.RemoveAll(dst)
		return "", err
	}
	if err := os.WriteFile(done, []byte(strconv.FormatUint(uint64(base), 10)), 0o600); err != nil {
		return "", err
	}
	return dst, nil
}

// shiftUpper moves the box's writable layer to its id range when it was
// made for another one (boxes of older versions all shared range 0). The
// box is not running, so nothing changes the tree while it is walked, and
// idshift never follows the box's symlinks.
func shiftUpper(upper string, base uint32) (int, error) {
	var st unix.Stat_t
	if err := unix.Lstat(upper, &st); err != nil {
		return 0, err
	}
	if st.Uid == base || st.Uid == 0 { // already the box's, or just made
		return 0, nil
	}
	if st.Uid < sandbox.IDRangeFirst || (st.Uid-sandbox.IDRangeFirst)%sandbox.IDRangeSize != 0 {
		return 0, fmt.Errorf("the box's files are owned by uid %d, which is no box range", st.Uid)
	}
	n, _, err := idshift.Tree(upper, st.Uid, base)
	return n, err
}
