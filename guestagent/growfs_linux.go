package guestagent

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ext4ResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64): grow a mounted
// ext4 file system online to a new block count.
const ext4ResizeFS = 0x40086610

// GrowRoot grows the ext4 file system mounted at mountpoint from device dev
// to the whole device, online (the kernel's own resize; no resize2fs in
// the image needed). The VM engines give a box a disk of disk_mib over an
// image built smaller, and this is what makes the space usable. It only
// ever grows, so it is a no-op on every boot but the first.
func GrowRoot(dev, mountpoint string) (grown bool, err error) {
	d, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	size, err := unix.IoctlGetUint64(int(d.Fd()), unix.BLKGETSIZE64)
	d.Close()
	if err != nil {
		return false, fmt.Errorf("size of %s: %w", dev, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return false, err
	}
	if st.Type != unix.EXT4_SUPER_MAGIC || st.Bsize <= 0 {
		return false, nil // not ext4: nothing we know how to grow
	}
	want := size / uint64(st.Bsize)
	if want <= st.Blocks+uint64(st.Bsize) { // within a block group's overhead: done
		return false, nil
	}
	f, err := os.Open(mountpoint)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ext4ResizeFS, uintptr(unsafe.Pointer(&want))); e != 0 {
		return false, fmt.Errorf("growing %s to %d blocks: %w", mountpoint, want, e)
	}
	return true, nil
}
