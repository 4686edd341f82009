package oci

// Unpacking one layer onto the tree with OCI whiteout semantics.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/inroot"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// ErrTooLarge means an image unpacks to more than the configured cap.
var ErrTooLarge = errors.New("image too large")

// limits bound what the layers of one image may unpack to.
type limits struct {
	bytes   int64 // regular file contents, all layers together
	entries int   // tar entries, all layers together
}

// unpackStats counts what was unpacked and what was left out.
type unpackStats struct {
	Bytes    int64
	Entries  int
	Devices  int // device nodes skipped
	Xattrs   int // extended attributes dropped
	Clamped  int // owners outside 0..65535 set to nobody
	Unknown  int // entry types skipped
	dirTimes map[string]time.Time
}

type unpacker struct {
	ctx   context.Context // nil: never cancelled
	t     *tree
	lim   limits
	stats *unpackStats
	log   *slog.Logger
	buf   []byte
	// streamed counts the content of every entry, kept or skipped: the
	// tar reader reads through what is skipped too.
	streamed int64
}

// layer applies one uncompressed layer tar.
func (u *unpacker) layer(r io.Reader) error {
	u.t.startLayer()
	if u.ctx != nil {
		r = ctxReader{u.ctx, r}
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the layer: %w", err)
		}
		u.stats.Entries++
		if u.stats.Entries > u.lim.entries {
			return fmt.Errorf("%w: more than %d files", ErrTooLarge, u.lim.entries)
		}
		if u.streamed += max(hdr.Size, 0); u.streamed > u.lim.bytes {
			return fmt.Errorf("%w: the layers hold more than %d MiB", ErrTooLarge, u.lim.bytes>>20)
		}
		if err := u.entry(tr, hdr); err != nil {
			return err
		}
	}
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header) error {
	p, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if p == "." {
		return nil // the root keeps its own owner and mode
	}
	base := path.Base(p)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(p, base)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			u.stats.Xattrs++
		}
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		u.stats.Devices++
		u.log.Debug("skipping a device node", "path", "/"+p)
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	default:
		u.stats.Unknown++
		u.log.Debug("skipping an entry of unknown type", "path", "/"+p, "type", hdr.Typeflag)
		return nil
	}
	dirfd, canon, name, err := u.t.parent(p)
	if err != nil {
		return fmt.Errorf("/%s: %w", p, err)
	}
	defer unix.Close(dirfd)
	if err := u.place(tr, hdr, dirfd, canon, name); err != nil {
		return fmt.Errorf("/%s: %w", p, err)
	}
	u.t.created[canon] = true
	return nil
}

// whiteout removes what a lower layer had at the whiteout's target, or,
// for an opaque whiteout, every child of its directory that this layer did
// not create.
func (u *unpacker) whiteout(p, base string) error {
	dir := path.Dir(p)
	cdir, err := u.t.resolve(dir)
	if err != nil {
		return fmt.Errorf("whiteout /%s: %w", p, err)
	}
	dirfd, err := u.t.openDir(cdir)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("whiteout /%s: %w", p, errNotDir)
		}
		return err
	}
	defer unix.Close(dirfd)
	if base == opaqueWhiteout {
		f, err := os.Open(path.Join(u.t.root, cdir))
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return err
		}
		for _, n := range names {
			if c := path.Join(cdir, n); !u.t.created[c] {
				if err := u.t.removeAt(dirfd, n, c); err != nil {
					return fmt.Errorf("opaque whiteout /%s: %w", p, err)
				}
			}
		}
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if strings.HasPrefix(name, whiteoutPrefix) || name == "" || name == "." || name == ".." {
		return nil // other .wh..wh. metadata (aufs); nothing to remove
	}
	target := path.Join(cdir, name)
	if u.t.created[target] {
		return nil // a whiteout hides lower layers only
	}
	return u.t.removeAt(dirfd, name, target)
}

// place creates one entry as name in dirfd.
func (u *unpacker) place(tr *tar.Reader, hdr *tar.Header, dirfd int, canon, name string) error {
	uid, gid := clampID(hdr.Uid), clampID(hdr.Gid)
	if uid != hdr.Uid || gid != hdr.Gid {
		u.stats.Clamped++
	}
	mode := uint32(hdr.Mode) & 0o7777
	var st unix.Stat_t
	exists := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	isDir := exists && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if exists && !(isDir && hdr.Typeflag == tar.TypeDir) {
		if err := u.t.removeAt(dirfd, name, canon); err != nil {
			return err
		}
	}
	delete(u.t.newLinks, canon)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !isDir {
			if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
				return &os.PathError{Op: "mkdir", Err: err}
			}
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Err: err}
		}
		defer unix.Close(fd)
		u.t.dirs[canon] = true
		if u.stats.dirTimes == nil {
			u.stats.dirTimes = map[string]time.Time{}
		}
		u.stats.dirTimes[canon] = hdr.ModTime
		return ownMode(fd, uid, gid, mode)
	case tar.TypeReg, tar.TypeRegA:
		if hdr.Size < 0 || hdr.Size > u.lim.bytes-u.stats.Bytes {
			return fmt.Errorf("%w: the layers unpack to more than %d MiB", ErrTooLarge, u.lim.bytes>>20)
		}
		u.stats.Bytes += hdr.Size
		fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "create", Err: err}
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		if u.buf == nil {
			u.buf = make([]byte, 1<<20)
		}
		if n, err := io.CopyBuffer(onlyWriter{f}, io.LimitReader(tr, hdr.Size), u.buf); err != nil {
			return err
		} else if n != hdr.Size {
			return fmt.Errorf("short file: %d of %d bytes: %w", n, hdr.Size, io.ErrUnexpectedEOF)
		}
		if err := ownMode(fd, uid, gid, mode); err != nil {
			return err
		}
		return setTimes(dirfd, name, hdr)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, dirfd, name); err != nil {
			return &os.PathError{Op: "symlink", Err: err}
		}
		u.t.newLinks[canon] = true
		if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lchown", Err: err}
		}
		return setTimes(dirfd, name, hdr)
	case tar.TypeLink:
		return u.hardlink(hdr, dirfd, name)
	case tar.TypeFifo:
		if err := unix.Mknodat(dirfd, name, unix.S_IFIFO|0o600, 0); err != nil {
			return &os.PathError{Op: "mkfifo", Err: err}
		}
		// name is the FIFO just made in a tree only this process writes.
		if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lchown", Err: err}
		}
		return unix.Fchmodat(dirfd, name, mode, 0)
	}
	return nil
}

// hardlink links name to an entry already inside the root. The target's
// parents are resolved like any entry's; the target itself must be a file
// (never a directory), and a symlink target is linked, not followed.
func (u *unpacker) hardlink(hdr *tar.Header, dirfd int, name string) error {
	tp, err := cleanName(hdr.Linkname)
	if err != nil {
		return err
	}
	if tp == "." {
		return fmt.Errorf("%w: hard link to the root", errUnsafe)
	}
	tdir, _, tname, err := u.t.parent(tp)
	if err != nil {
		return fmt.Errorf("hard link target /%s: %w", tp, err)
	}
	defer unix.Close(tdir)
	var st unix.Stat_t
	if err := unix.Fstatat(tdir, tname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hard link target /%s: %w", tp, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: hard link to the directory /%s", errUnsafe, tp)
	}
	if err := unix.Linkat(tdir, tname, dirfd, name, 0); err != nil {
		return &os.PathError{Op: "link", Err: err}
	}
	return nil
}

// ownMode sets owner, then mode: chown clears setuid and setgid bits.
func ownMode(fd, uid, gid int, mode uint32) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return &os.PathError{Op: "chown", Err: err}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "chmod", Err: err}
	}
	return nil
}

func setTimes(dirfd int, name string, hdr *tar.Header) error {
	mt := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	at := mt
	if !hdr.AccessTime.IsZero() {
		at = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	return unix.UtimesNanoAt(dirfd, name, []unix.Timespec{at, mt}, unix.AT_SYMLINK_NOFOLLOW)
}

// finish sets the directories' times, which unpacking their children moved.
func (u *unpacker) finish() {
	for p, mt := range u.stats.dirTimes {
		ts := unix.NsecToTimespec(mt.UnixNano())
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		fd, err := inroot.Open(u.t.rootFD, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			continue // removed by a later layer
		}
		unix.UtimesNanoAt(fd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(fd)
	}
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// onlyWriter hides os.File's ReadFrom, so io.CopyBuffer uses our buffer
// instead of copy_file_range attempts on a tar stream.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
