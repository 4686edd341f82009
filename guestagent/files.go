package guestagent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// maxDirEntries caps list_dir; the result says truncated past it.
const maxDirEntries = 10000

func absPath(p string) (string, *wire.Error) {
	if !filepath.IsAbs(p) {
		return "", wire.Errorf(wire.CodeInvalid, "path %q must be absolute", p)
	}
	return filepath.Clean(p), nil
}

// kind names a file type for error messages.
func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file"
}

// openRegular opens path for reading and refuses anything but a regular
// file. The open cannot block (O_NONBLOCK: a FIFO with no writer would
// block open(2) forever) or take a terminal (O_NOCTTY), and the type is
// checked on the opened descriptor, so a path swapped meanwhile cannot
// slip a FIFO or a device (/dev/zero never ends) past the check. Symlinks
// are followed: the agent runs inside the box, so they resolve in the
// box's own view.
func openRegular(path string) (*os.File, fs.FileInfo, *wire.Error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ENXIO) {
		// A unix socket, or a device without a driver.
		return nil, nil, wire.Errorf(wire.CodeInvalid, "%s: not a regular file (a socket or device); only regular files can be read", path)
	}
	if err != nil {
		return nil, nil, fileError(err, path)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fileError(err, path)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		return f, fi, nil
	case m.IsDir():
		f.Close()
		return nil, nil, wire.Errorf(wire.CodeIsDir, "%s: is a directory (use list_dir)", path)
	default:
		f.Close()
		return nil, nil, wire.Errorf(wire.CodeInvalid, "%s: is a %s, not a regular file; only regular files can be read", path, kind(m))
	}
}

func toInfo(name string, fi fs.FileInfo, link string) *wire.FileInfo {
	return &wire.FileInfo{Name: name, Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime().UTC(), IsDir: fi.IsDir(), Link: link}
}

// writeFile receives Data frames into a temporary file beside the target
// and renames it into place, so a failed or interrupted write leaves the old
// file (or nothing) behind, never half a file.
func (s *Server) writeFile(c *call, req *wire.WriteFileReq) error {
	path, werr := absPath(req.Path)
	if werr != nil {
		return c.fail(werr)
	}
	if req.Size > s.cfg.MaxFileSize {
		return c.fail(wire.Errorf(wire.CodeTooLarge, "%s: %d bytes is over the box's file size limit of %d bytes", path, req.Size, s.cfg.MaxFileSize))
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return c.fail(wire.Errorf(wire.CodeIsDir, "%s: is a directory", path))
	}
	// The write replaces the target by a rename and never opens it, so a
	// FIFO cannot block it; but replacing a FIFO, a socket or a device
	// node (/dev/null) with a file is never what the caller meant.
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() && fi.Mode()&(fs.ModeSymlink|fs.ModeDir) == 0 {
		return c.fail(wire.Errorf(wire.CodeInvalid, "%s: is a %s, not a regular file; write_file replaces regular files only (remove it first if you mean to)", path, kind(fi.Mode())))
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return c.fail(fileError(err, dir))
	}
	mode := req.Mode.Perm()
	if mode == 0 {
		mode = 0o644
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".boxlite-"+hex.EncodeToString(rnd[:])+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return c.fail(fileError(err, path))
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// fail removes the temporary file before the host hears of the
	// failure, so nothing of a failed write is there once it has.
	fail := func(e *wire.Error) error {
		f.Close()
		os.Remove(tmp)
		return c.fail(e)
	}
	var n int64
	for {
		fr, err := c.r.ReadFrame()
		if err != nil {
			return fmt.Errorf("write_file %s: host went away: %w", path, err)
		}
		if fr.Type == wire.FrameEOF {
			break
		}
		if fr.Type != wire.FrameData {
			return fail(wire.Errorf(wire.CodeInvalid, "write_file: unexpected %s frame", fr.Type))
		}
		n += int64(len(fr.Payload))
		if n > s.cfg.MaxFileSize {
			return fail(wire.Errorf(wire.CodeTooLarge, "%s: over the box's file size limit of %d bytes", path, s.cfg.MaxFileSize))
		}
		if _, err := f.Write(fr.Payload); err != nil {
			return fail(fileError(err, path))
		}
	}
	if req.Size >= 0 && n != req.Size {
		return fail(wire.Errorf(wire.CodeInvalid, "%s: announced %d bytes, received %d", path, req.Size, n))
	}
	// Set the mode explicitly: OpenFile's mode is filtered by the umask.
	if err := f.Chmod(mode); err != nil {
		return fail(fileError(err, path))
	}
	if req.UID != nil || req.GID != nil {
		uid, gid := -1, -1
		if req.UID != nil {
			uid = int(*req.UID)
		}
		if req.GID != nil {
			gid = int(*req.GID)
		}
		if err := f.Chown(uid, gid); err != nil {
			return fail(fileError(err, path))
		}
	}
	if err := f.Close(); err != nil {
		return fail(fileError(err, path))
	}
	if err := os.Rename(tmp, path); err != nil {
		return c.fail(fileError(err, path))
	}
	ok = true
	fi, err := os.Stat(path)
	if err != nil {
		return c.fail(fileError(err, path))
	}
	return c.result(&wire.Result{File: toInfo(filepath.Base(path), fi, ""), Bytes: n})
}

// readFile sends a file's bytes as Data frames, up to MaxBytes or the box's
// limit. A file over the limit with no MaxBytes asked is refused (the caller
// should ask for a prefix); with MaxBytes it is truncated and says so.
func (s *Server) readFile(c *call, req *wire.ReadFileReq) error {
	path, werr := absPath(req.Path)
	if werr != nil {
		return c.fail(werr)
	}
	f, fi, werr := openRegular(path)
	if werr != nil {
		return c.fail(werr)
	}
	defer f.Close()
	limit := s.cfg.MaxFileSize
	if req.MaxBytes > 0 {
		limit = min(limit, req.MaxBytes)
	} else if fi.Size() > limit {
		return c.fail(wire.Errorf(wire.CodeTooLarge, "%s: %d bytes is over the read limit of %d bytes; ask for fewer bytes", path, fi.Size(), limit))
	}
	buf := make([]byte, wire.ChunkSize)
	var n int64
	for n < limit {
		m, err := f.Read(buf[:min(int64(len(buf)), limit-n)])
		if m > 0 {
			if werr := c.write(wire.FrameData, buf[:m]); werr != nil {
				return werr
			}
			n += int64(m)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, syscall.EAGAIN) {
			// A regular file that blocks (/proc/kmsg); the fd is non-blocking.
			return c.fail(wire.Errorf(wire.CodeInvalid, "%s: reading would block (not an ordinary file)", path))
		}
		if err != nil {
			return c.fail(fileError(err, path))
		}
	}
	truncated := false
	if n == limit {
		// Probe for one more byte: files in /proc report size 0.
		var one [1]byte
		if m, _ := f.Read(one[:]); m > 0 {
			truncated = true
		}
	}
	return c.result(&wire.Result{File: toInfo(filepath.Base(path), fi, ""), Bytes: n, Truncate: truncated})
}

func (s *Server) stat(c *call, p string) error {
	path, werr := absPath(p)
	if werr != nil {
		return c.fail(werr)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return c.fail(fileError(err, path))
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		link, _ = os.Readlink(path)
	}
	return c.result(&wire.Result{File: toInfo(filepath.Base(path), fi, link)})
}

func (s *Server) listDir(c *call, p string) error {
	path, werr := absPath(p)
	if werr != nil {
		return c.fail(werr)
	}
	// O_DIRECTORY|O_NONBLOCK: a FIFO fails at once instead of blocking the open.
	d, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return c.fail(fileError(err, path))
	}
	defer d.Close()
	ents, err := d.ReadDir(maxDirEntries + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return c.fail(fileError(err, path))
	}
	res := &wire.Result{Entries: []wire.FileInfo{}}
	if len(ents) > maxDirEntries {
		ents, res.Truncate = ents[:maxDirEntries], true
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(filepath.Join(path, e.Name()))
		}
		res.Entries = append(res.Entries, *toInfo(e.Name(), fi, link))
	}
	return c.result(res)
}
