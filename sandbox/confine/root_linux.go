package confine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ensureRootDir creates RootDir and makes it a private mount.
func ensureRootDir() error { return EnsurePrivateDir(RootDir) }

// EnsurePrivateDir creates dir (searchable, not listable, by box uids: mode
// 0711, and its parent too) and makes it a private bind mount of itself, so
// nothing mounted below it propagates to the host's other mount namespaces.
// The jail engine's mount base and the confined roots' directory use it.
func EnsurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	os.Chmod(dir, 0o711)
	os.Chmod(filepath.Dir(dir), 0o711) // /run/boxlite; /run itself is left as it is
	if isMountPoint(dir) {
		return nil
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// isMountPoint reports whether path is a mount point (per mountinfo).
func isMountPoint(path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && UnescapeMountPath(fields[4]) == path {
			return true
		}
	}
	return false
}

// UnescapeMountPath undoes mountinfo's octal escapes of a path.
func UnescapeMountPath(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// bindSpec is one bind of a confined root.
type bindSpec struct {
	src, dst string
	writable bool
	optional bool // a missing source is skipped
}

// buildRoot mounts a tmpfs at dir and binds every source into it at its
// destination: read-only unless writable, nosuid, nodev unless a device.
// It makes dir/proc for the stage's own /proc and then makes the tmpfs
// read-only. The caller unmounts it (unmountRoot) once the program's mount
// namespace holds its copy.
func buildRoot(dir string, binds []bindSpec) (err error) {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	unmountRoot(dir) // a leftover of a server that died here
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("mounting the root: %w", err)
	}
	defer func() {
		if err != nil {
			unmountRoot(dir)
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, "proc"), 0o555); err != nil {
		return err
	}
	for _, b := range binds {
		fi, err := os.Stat(b.src)
		if err != nil {
			if b.optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
		dst := filepath.Join(dir, b.dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if fi.IsDir() {
			err = os.Mkdir(dst, 0o755)
		} else {
			var f *os.File
			if f, err = os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o644); err == nil {
				f.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("bind target %s: %w", b.dst, err)
		}
		if err := unix.Mount(b.src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", b.src, err)
		}
		// A remount keeps the flags the source's mount has (the kernel
		// would refuse to drop them in the program's namespace anyway).
		var st unix.Statfs_t
		if err := unix.Statfs(dst, &st); err != nil {
			return err
		}
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID)
		for _, x := range []struct{ st, ms int64 }{{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NODEV, unix.MS_NODEV},
			{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME}} {
			if st.Flags&x.st != 0 {
				flags |= uintptr(x.ms)
			}
		}
		if fi.Mode()&os.ModeDevice == 0 {
			flags |= unix.MS_NODEV
		}
		if !b.writable {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("", dst, "", flags, ""); err != nil {
			return fmt.Errorf("bind %s: remounting: %w", b.src, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("making the root read-only: %w", err)
	}
	return nil
}

// unmountRoot detaches the host's copy of a confined root. The mount point
// stays while the program runs: removing it would unmount the program's
// copy too (the kernel detaches mounts on a removed directory in every
// namespace); removeRootDir removes it afterwards.
func unmountRoot(dir string) {
	unix.Unmount(dir, unix.MNT_DETACH)
}

// removeRootDir removes the mount point of a confined root whose program
// has ended.
func removeRootDir(name string) {
	dir := filepath.Join(RootDir, name)
	unmountRoot(dir)
	os.Remove(dir)
}
