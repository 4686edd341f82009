package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CopyFileCoW copies src to dst (created, mode 0600, must not exist) the
// cheapest way the file system allows: a reflink (FICLONE: the copy shares
// the blocks until either side writes), else a sparse copy that reads and
// writes only the data extents (SEEK_DATA/SEEK_HOLE), so a sparse disk
// image stays sparse. It returns whether the copy is a reflink. A failed
// copy leaves no dst.
func CopyFileCoW(ctx context.Context, src, dst string) (reflinked bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if reflink(out, in) {
		return true, nil
	}
	fi, err := in.Stat()
	if err != nil {
		return false, err
	}
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return false, err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole up to the end
		}
		if err != nil {
			return false, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return false, fmt.Errorf("seek hole: %w", err)
		}
		if _, err := io.CopyBuffer(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data), buf); err != nil {
			return false, err
		}
		off = hole
	}
	return false, out.Sync()
}

// diskUsage is the space the regular files in dir take on disk (allocated
// blocks, so sparse files count what they hold).
func diskUsage(dir string) (int64, []string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil, err
	}
	var total int64
	var names []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return 0, nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		names = append(names, e.Name())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += fi.Size()
		}
	}
	return total, names, nil
}

// flockFile is a shared or exclusive flock on a file in the locks directory.
type flockFile struct{ f *os.File }

// lockFile takes path's flock (exclusive or shared), waiting until ctx ends;
// with wait false it fails at once when the lock is held.
func lockFile(ctx context.Context, path string, exclusive, wait bool) (*flockFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &flockFile{f: f}, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("flock: %w", err)
		}
		if !wait {
			f.Close()
			return nil, errLocked
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

var errLocked = errors.New("locked by another operation")

func (l *flockFile) unlock(remove bool) {
	if remove {
		os.Remove(l.f.Name())
	}
	l.f.Close()
}

// removeSnapshotFiles removes a snapshot's directory and its temporary one.
func removeSnapshotFiles(root, id string) error {
	return errors.Join(os.RemoveAll(filepath.Join(root, id)), os.RemoveAll(filepath.Join(root, tmpPrefix+id)))
}

// tmpPrefix marks a snapshot directory still being written.
const tmpPrefix = ".tmp-"
