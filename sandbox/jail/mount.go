package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
)

// mountBase holds the short-lived host mounts of box roots. It is a private
// bind mount of itself, so nothing mounted below propagates to other mount
// namespaces of the host.
var mountBase = "/run/boxlite/mnt"

func mountPoint(id string) string { return filepath.Join(mountBase, id) }

// ensureMountBase creates mountBase (searchable, not listable, by box uids)
// and makes it a private mount.
func ensureMountBase() error { return confine.EnsurePrivateDir(mountBase) }

func unescapeMountPath(s string) string { return confine.UnescapeMountPath(s) }

// mountRoot mounts the box's root at its mount point and returns it: an
// overlay of lower (read-only, seen through an idmapped mount made with ns
// when ns is not nil), upper and work. The overlay's options name the layers
// as /proc/self/fd/N, so the box's mountinfo shows no host path.
func mountRoot(id, lower, upper, work string, ns *os.File) (string, error) {
	if err := ensureMountBase(); err != nil {
		return "", err
	}
	mp := mountPoint(id)
	unmountRoot(mp) // a leftover of a crashed start
	if err := os.Mkdir(mp, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	if ns != nil {
		lmp := mp + ".lower"
		if err := idmapLower(lower, lmp, ns); err != nil {
			os.Remove(mp)
			return "", err
		}
		// The overlay keeps private clones of its layers: the host's view
		// of the idmapped image is not needed once it is mounted.
		defer unmountRoot(lmp)
		lower = lmp
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, p := range []string{lower, upper, work} {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			os.Remove(mp)
			return "", err
		}
		fds = append(fds, fd)
	}
	opts := fmt.Sprintf("lowerdir=/proc/self/fd/%d,upperdir=/proc/self/fd/%d,workdir=/proc/self/fd/%d", fds[0], fds[1], fds[2])
	if err := unix.Mount("overlay", mp, "overlay", 0, opts); err != nil {
		os.Remove(mp)
		return "", fmt.Errorf("overlay on %s: %w", mp, err)
	}
	if err := unix.Mount("", mp, "", unix.MS_PRIVATE, ""); err != nil {
		unmountRoot(mp)
		return "", err
	}
	return mp, nil
}

// detachRoot detaches the host's copy of a box root. The mount point itself
// must stay while the box lives: removing it would also detach the jail's
// copy of the mount. Safe to call when nothing is mounted there.
func detachRoot(mp string) {
	for unix.Unmount(mp, unix.MNT_DETACH) == nil {
	}
}

// unmountRoot detaches and removes the mount point (the box is gone).
func unmountRoot(mp string) {
	detachRoot(mp)
	os.Remove(mp)
}
