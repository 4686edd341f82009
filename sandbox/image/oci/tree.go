package oci

// tree is a root directory that layers are unpacked into. Every operation
// names a path inside the root; parents are resolved by resolve (symlinks
// of earlier layers followed inside the root, never out of it; symlinks of
// the layer being unpacked never followed) and opened with openat2
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so the kernel refuses anything the
// resolver missed; the last component is only ever touched with *at calls
// that do not follow it.

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/inroot"
)

// maxLinks bounds the symlinks one resolution follows (the kernel's limit).
const maxLinks = 40

// errUnsafe marks a layer that tries to reach outside the root or through
// a symlink it created itself: the whole image is refused.
var errUnsafe = errors.New("unsafe layer")

type tree struct {
	root   string // host path of the root (a directory this process created)
	rootFD int    // O_PATH descriptor of root

	// dirs are canonical paths known to be real directories; cleared
	// whenever something is removed or replaced.
	dirs map[string]bool
	// Per layer: what it created (whiteouts do not apply to it) and the
	// symlinks it made (never followed while it is unpacked).
	created  map[string]bool
	newLinks map[string]bool
}

func openTree(root string) (*tree, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	return &tree{root: root, rootFD: fd, dirs: map[string]bool{}, created: map[string]bool{}, newLinks: map[string]bool{}}, nil
}

func (t *tree) close() { unix.Close(t.rootFD) }

// startLayer resets the per-layer bookkeeping.
func (t *tree) startLayer() {
	clear(t.created)
	clear(t.newLinks)
}

// cleanName turns a tar entry name into a path relative to the root:
// absolute names are taken relative to it, and a name that climbs out of
// it with ".." is refused. "." is the root itself.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: entry name %q contains a NUL byte", errUnsafe, name)
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: entry %q points outside the root", errUnsafe, name)
	}
	if p == "" {
		p = "."
	}
	return p, nil
}

// stat looks at the canonical path p without following its last component.
// ENOENT comes back as an os.ErrNotExist error.
func (t *tree) stat(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := inroot.Open(t.rootFD, p, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	return st, unix.Fstat(fd, &st)
}

func (t *tree) readlink(p string) (string, error) {
	fd, err := inroot.Open(t.rootFD, p, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: p, Err: err}
	}
	return string(buf[:n]), nil
}

// resolve returns the canonical form of the directory path dir (relative,
// cleaned): every symlink in it replaced by its target, interpreted inside
// the root as if the root were "/". The result names no symlink; its tail
// may not exist yet. A symlink created by the current layer is refused.
func (t *tree) resolve(dir string) (string, error) {
	if dir == "." || dir == "" {
		return ".", nil
	}
	var out []string
	rest := strings.Split(dir, "/")
	links := 0
	missing := false
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			missing = false
			continue
		}
		cand := path.Join(append(append([]string{}, out...), c)...)
		if missing || t.dirs[cand] {
			out = append(out, c)
			continue
		}
		st, err := t.stat(cand)
		if errors.Is(err, unix.ENOENT) {
			missing = true
			out = append(out, c)
			continue
		}
		if err != nil {
			return "", err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			t.dirs[cand] = true
			out = append(out, c)
		case unix.S_IFLNK:
			if t.newLinks[cand] {
				return "", fmt.Errorf("%w: path %q goes through the symlink %q the same layer created", errUnsafe, dir, cand)
			}
			if links++; links > maxLinks {
				return "", fmt.Errorf("%w: too many symlinks resolving %q", errUnsafe, dir)
			}
			target, err := t.readlink(cand)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				out = out[:0]
			}
			rest = append(strings.Split(target, "/"), rest...)
		default:
			return "", fmt.Errorf("%w: %q is not a directory", errNotDir, "/"+cand)
		}
	}
	if len(out) == 0 {
		return ".", nil
	}
	return path.Join(out...), nil
}

var errNotDir = errors.New("not a directory")

// openDir returns an O_PATH descriptor of the canonical directory p,
// creating missing components (mode 0755, owned by root).
func (t *tree) openDir(p string) (int, error) {
	if p == "." {
		return unix.Dup(t.rootFD)
	}
	fd, err := inroot.Open(t.rootFD, p, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return -1, err
	}
	cur, err := unix.Dup(t.rootFD)
	if err != nil {
		return -1, err
	}
	sofar := ""
	for _, c := range strings.Split(p, "/") {
		sofar = path.Join(sofar, c)
		next, err := inroot.Open(cur, c, unix.O_PATH|unix.O_DIRECTORY, 0)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(cur, c, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, &os.PathError{Op: "mkdir", Path: sofar, Err: err}
			}
			t.created[sofar] = true
			next, err = inroot.Open(cur, c, unix.O_PATH|unix.O_DIRECTORY, 0)
		}
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		t.dirs[sofar] = true
		cur = next
	}
	return cur, nil
}

// parent resolves the parent of the cleaned entry path p and opens it. It
// returns the descriptor, the canonical path of the entry and its last
// component.
func (t *tree) parent(p string) (fd int, canon, base string, err error) {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	cdir, err := t.resolve(dir)
	if err != nil {
		return -1, "", "", err
	}
	fd, err = t.openDir(cdir)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return -1, "", "", fmt.Errorf("%w: a parent of %q is not a directory", errNotDir, "/"+p)
		}
		return -1, "", "", err
	}
	return fd, path.Join(cdir, base), base, nil
}

// removeAt removes name in dirfd (canonical path canon), a whole tree if
// it is a directory. Missing is fine.
func (t *tree) removeAt(dirfd int, name, canon string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	clear(t.dirs)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(dirfd, name, 0)
	}
	// canon names no symlink, and RemoveAll never follows one below it.
	return os.RemoveAll(filepath.Join(t.root, canon))
}

// clampID keeps ids a box can represent (each box has 65536); others
// become nobody, so no file of an image is ever owned by a host id that
// belongs to a box's range.
func clampID(id int) int {
	if id < 0 || id >= 65536 {
		return 65534
	}
	return id
}
