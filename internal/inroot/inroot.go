// Package inroot opens, creates and replaces paths inside a directory tree
// that someone else controls (a box's root file system) without ever
// following a symlink out of it: every lookup is openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS relative to
// a descriptor, and the last component is created or renamed over with
// *at calls on its parent's descriptor. A symlink where a directory or file
// is expected is an error, or, for the Ensure calls, replaced. This is the
// lesson of runc's CVE-2019-19921 and CVE-2024-21626.
//
// It imports nothing of ours: the guest agent (the jail's start-up stage)
// and host code both use it.
package inroot

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Open opens path (relative, inside dirfd's tree) with flags, following no
// symlink at all and never leaving the tree. O_CLOEXEC is always added.
func Open(dirfd int, path string, flags int, mode uint32) (int, error) {
	if err := checkPath(path); err != nil {
		return -1, err
	}
	fd, err := unix.Openat2(dirfd, path, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolve})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: path, Err: err}
	}
	return fd, nil
}

// EnsureDir returns an O_PATH descriptor of the directory name directly in
// dirfd, creating it with mode if it is missing. Anything else of that name
// (a symlink, a file, a device) is removed first: the caller is about to
// mount over it and must not land elsewhere.
func EnsureDir(dirfd int, name string, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	for range 3 {
		fd, err := Open(dirfd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err == nil {
			return fd, nil
		}
		switch {
		case errors.Is(err, unix.ENOENT):
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return -1, fmt.Errorf("replacing %s: %w", name, err)
			}
		default:
			return -1, err
		}
		if err := unix.Mkdirat(dirfd, name, mode); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("mkdir %s: %w", name, err)
		}
	}
	return -1, fmt.Errorf("%s keeps changing under us: %w", name, unix.EAGAIN)
}

// EnsureFile returns an O_PATH descriptor of a regular file name directly in
// dirfd (an empty one is created if missing), for a bind mount of a file.
// A symlink or another kind of file of that name is refused.
func EnsureFile(dirfd int, name string, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	fd, err := Open(dirfd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, mode)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, fmt.Errorf("%s is not a regular file", name)
	}
	return Open(dirfd, name, unix.O_PATH, 0)
}

// WriteFile replaces the file name directly in dirfd with data: it writes a
// new file beside it and renames it over the old name, so a symlink of that
// name is replaced, never followed.
func WriteFile(dirfd int, name string, data []byte, mode uint32) error {
	if err := checkName(name); err != nil {
		return err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := "." + name + ".boxlite-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dirfd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	err = writeAll(fd, data)
	if err == nil {
		err = unix.Fchmod(fd, mode)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dirfd, tmp, dirfd, name)
	}
	if err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// checkName accepts one path component.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("inroot: %q is not a single file name", name)
	}
	return nil
}

// checkPath accepts a relative path without NUL bytes; ".." and symlinks
// are the kernel's to refuse (RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS).
func checkPath(path string) error {
	if path == "" || filepath.IsAbs(path) || strings.ContainsRune(path, 0) {
		return fmt.Errorf("inroot: %q is not a relative path", path)
	}
	return nil
}

// FdPath is the path through which the kernel reaches fd's file, for
// calls such as mount(2) that take no descriptor.
func FdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }
