package jail

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// A jail box's writable layer lives on a file system of its own: an ext4
// image of disk_mib in the box directory (sparse: it takes only what the box
// wrote), attached to a loop device and mounted on the host only long enough
// for the overlay to take it. Filling it gives ENOSPC inside the box, and
// the host's disk and other boxes are unaffected. The loop device clears
// itself (LO_FLAGS_AUTOCLEAR) when the jail's mount namespace, the last
// user of the mount, goes away.

const diskImage = "disk.ext4"

// diskAvailable says why boxes cannot get a disk of their own ("" if they can).
func diskAvailable() string {
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no loop devices (/dev/loop-control missing; modprobe loop)"
	}
	if _, err := exec.LookPath("mke2fs"); err != nil {
		return "mke2fs not installed (apt-get install e2fsprogs)"
	}
	return ""
}

// mountDisk makes (on first use) and mounts the box's disk at its private
// mount point, and returns the directory to hold upper/ and work/ and a
// func that detaches the host's mount (call it once the overlay is up). A
// box made before disks existed keeps its layer in the box directory.
func mountDisk(spec sandbox.Spec, base uint32) (dir string, detach func(), err error) {
	img := filepath.Join(spec.BoxDir, diskImage)
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(spec.BoxDir, "upper")); err == nil {
			return spec.BoxDir, func() {}, nil // legacy layout: no quota
		}
		if err := makeDisk(img, spec.DiskMiB, base); err != nil {
			return "", nil, err
		}
	}
	mp := mountPoint(spec.ID) + ".disk"
	unmountRoot(mp) // a leftover of a crashed start
	if err := os.Mkdir(mp, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", nil, err
	}
	dev, err := attachLoop(img)
	if err != nil {
		os.Remove(mp)
		return "", nil, err
	}
	err = unix.Mount(dev.Name(), mp, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "errors=remount-ro,discard") // discard: deleted files give their space back to the host
	dev.Close()                                                                                         // autoclear: the mount holds the device from here on
	if err != nil {
		os.Remove(mp)
		return "", nil, fmt.Errorf("mounting the box's disk: %w", err)
	}
	if err := unix.Mount("", mp, "", unix.MS_PRIVATE, ""); err != nil {
		unmountRoot(mp)
		return "", nil, err
	}
	return mp, func() { unmountRoot(mp) }, nil
}

// makeDisk creates a sparse ext4 image of mib MiB whose root belongs to
// the box's root. It is written beside its final name and renamed, so a
// crash never leaves a half-made disk.
func makeDisk(img string, mib int, base uint32) error {
	tmp := img + ".new"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(mib) << 20)
	f.Close()
	if err == nil {
		owner := strconv.FormatUint(uint64(base), 10)
		var out []byte
		out, err = exec.Command("mke2fs", "-q", "-t", "ext4", "-F", "-m", "0", "-L", "boxlite-box",
			"-E", "root_owner="+owner+":"+owner+",lazy_itable_init=1,lazy_journal_init=1", tmp).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("mke2fs: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err == nil {
		err = os.Rename(tmp, img)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("making the box's disk: %w", err)
	}
	return nil
}

// attachLoop binds a free loop device to img (autoclear) and returns it open.
func attachLoop(img string) (*os.File, error) {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev, err := os.OpenFile("/dev/loop"+strconv.Itoa(n), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], filepath.Base(img))
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		// Another process took that device between the two calls: try the next.
		if !errors.Is(err, unix.EBUSY) || try > 20 {
			return nil, fmt.Errorf("attaching a loop device: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
}
