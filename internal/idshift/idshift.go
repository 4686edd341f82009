// Package idshift moves the owners of a file tree from one range of 65536
// host ids to another: the image builder uses it to give legacy images back
// their real owners, and the jail engine to move a box's writable layer to
// the box's id range. It never follows a symlink: WalkDir does not descend
// into them and Lchown changes the link itself. Callers make sure nothing
// else changes the tree meanwhile (the box is not running).
package idshift

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Size is the number of ids in a range.
const Size = 65536

// Tree changes every owner and group in [from, from+Size) under root to the
// same offset in [to, to+Size); ids outside the range are left alone. The
// setuid and setgid bits that chown clears are put back. It returns the
// number of entries changed and the tree's total size in bytes.
func Tree(root string, from, to uint32) (changed int, size int64, err error) {
	shift := func(id uint32) (uint32, bool) {
		if id >= from && id-from < Size {
			return id - from + to, true
		}
		return id, false
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		size += fi.Size()
		uid, uok := shift(st.Uid)
		gid, gok := shift(st.Gid)
		if (!uok && !gok) || from == to {
			return nil
		}
		if err := os.Lchown(p, int(uid), int(gid)); err != nil {
			return err
		}
		changed++
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 && fi.Mode()&fs.ModeSymlink == 0 {
			return unix.Chmod(p, uint32(st.Mode&0o7777))
		}
		return nil
	})
	return changed, size, err
}
