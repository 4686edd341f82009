package oci

// The layer cache: home/layers/sha256/<hex>, each file the blob whose
// sha256 is its name, verified before it is renamed into place. A blob is
// fetched under a per-digest lock, so two pulls (of one or two servers)
// never fetch it twice; pulls hold the cache's shared lock while they use
// it and prune takes it exclusively.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// ErrDigest means a blob's content does not match its digest.
var ErrDigest = errors.New("digest mismatch")

var hexRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// errStalled means a registry sent a blob too slowly: less than
// stallBytes in a stall window. Such a fetch holds the blob's lock, which
// every pull of an image with that layer (any tenant's) waits for, so it
// is abandoned rather than waited out.
var errStalled = errors.New("the registry stalled")

const (
	stallBytes  = 64 << 10
	stallWindow = 60 * time.Second
)

type cache struct {
	dir   string        // home/layers/sha256
	stall time.Duration // stallWindow; tests shorten it
}

func newCache(home string) (*cache, error) {
	dir := filepath.Join(home, "layers", "sha256")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &cache{dir: dir, stall: stallWindow}, nil
}

func checkDigest(d v1.Hash) error {
	if d.Algorithm != "sha256" || !hexRE.MatchString(d.Hex) {
		return fmt.Errorf("unsupported digest %q", d.String())
	}
	return nil
}

func (c *cache) path(d v1.Hash) string { return filepath.Join(c.dir, d.Hex) }

func (c *cache) has(d v1.Hash) bool {
	fi, err := os.Lstat(c.path(d))
	return err == nil && fi.Mode().IsRegular()
}

// use takes the cache's shared lock for the duration of a pull.
func (c *cache) use(ctx context.Context) (func(), error) {
	return lockFile(ctx, filepath.Join(c.dir, "..", ".prune.lock"), unix.LOCK_SH)
}

// put stores the blob d (size bytes when known, else at most size) unless
// it is there already; a blob longer than size is refused (ErrTooLarge).
// open is called for
// each attempt (a broken transfer is retried twice; a digest mismatch is
// not); progress gets byte deltas, negative when a failed attempt's bytes
// are taken back.
func (c *cache) put(ctx context.Context, d v1.Hash, size int64, open func() (io.ReadCloser, error), progress func(int64)) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, filepath.Join(c.dir, "."+d.Hex+".lock"), unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	if c.has(d) {
		return nil
	}
	// Leftovers of interrupted fetches of this blob (we hold its lock).
	old, _ := filepath.Glob(filepath.Join(c.dir, ".tmp-"+d.Hex+"-*"))
	for _, p := range old {
		os.Remove(p)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		n, err := c.fetch(d, size, open, progress)
		if err == nil {
			return nil
		}
		if size > 0 && n == size && !errors.Is(err, ErrDigest) {
			// All the bytes came and the reader still failed: the
			// registry client's own digest check.
			err = fmt.Errorf("blob %s: %w (%v)", d, ErrDigest, err)
		}
		if progress != nil && n > 0 {
			progress(-n)
		}
		lastErr = err
		if errors.Is(err, ErrDigest) || errors.Is(err, ErrTooLarge) || errors.Is(err, errStalled) || ctx.Err() != nil || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
			break
		}
	}
	return lastErr
}

// fetch writes one attempt to a temporary file and renames it into place
// if its digest matches. It returns the bytes read.
func (c *cache) fetch(d v1.Hash, max int64, open func() (io.ReadCloser, error), progress func(int64)) (int64, error) {
	rc, err := open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	var rnd [4]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(c.dir, ".tmp-"+d.Hex+"-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	var r io.Reader = rc
	if max > 0 {
		r = io.LimitReader(rc, max+1)
	}
	// A stall watchdog: closing the body ends a blocked read.
	var stalled atomic.Bool
	watchdog := time.AfterFunc(c.stall, func() {
		stalled.Store(true)
		rc.Close()
	})
	defer watchdog.Stop()
	var moved int64
	cr := &countReader{r: r, fn: func(n int64) {
		if progress != nil {
			progress(n)
		}
		if moved += n; moved >= stallBytes {
			moved = 0
			watchdog.Reset(c.stall)
		}
	}}
	_, err = io.CopyBuffer(onlyWriter{io.MultiWriter(f, h)}, cr, make([]byte, 1<<20))
	if err != nil && stalled.Load() {
		return cr.n, fmt.Errorf("blob %s: %w: less than %d KiB came in %s", d, errStalled, stallBytes>>10, c.stall)
	}
	if err != nil {
		return cr.n, err
	}
	if max > 0 && cr.n > max {
		return cr.n, fmt.Errorf("blob %s: more than the %d bytes expected: %w", d, max, ErrTooLarge)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return cr.n, fmt.Errorf("blob %s: content hashes to sha256:%s: %w", d, got, ErrDigest)
	}
	if err := f.Sync(); err != nil {
		return cr.n, err
	}
	if err := f.Close(); err != nil {
		return cr.n, err
	}
	if err := os.Rename(tmp, c.path(d)); err != nil {
		return cr.n, err
	}
	ok = true
	syncDir(c.dir)
	return cr.n, nil
}

// verify re-hashes a cached blob (used when a cached file is suspected).
func (c *cache) verify(d v1.Hash) error {
	f, err := os.Open(c.path(d))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != d.Hex {
		return fmt.Errorf("cached blob %s: %w", d, ErrDigest)
	}
	return nil
}

// prune removes every blob not in keep, and leftovers of interrupted
// fetches, under the cache's exclusive lock (no pull is using it); collect
// fills keep under that lock.
func (c *cache) prune(ctx context.Context, keep map[string]bool, collect func() error) (n int, bytes int64, err error) {
	unlock, err := lockFile(ctx, filepath.Join(c.dir, "..", ".prune.lock"), unix.LOCK_EX)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	if err := collect(); err != nil {
		return 0, 0, err
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case hexRE.MatchString(name) && !keep[name]:
		case strings.HasPrefix(name, ".tmp-"):
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".lock") && !keep[strings.TrimSuffix(name[1:], ".lock")]:
		default:
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(filepath.Join(c.dir, name)); err == nil && !strings.HasPrefix(name, ".") {
			n++
			bytes += fi.Size()
		}
	}
	return n, bytes, nil
}

type countReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.fn != nil && n > 0 {
		c.fn(int64(n))
	}
	return n, err
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// lockFile takes a flock (how: LOCK_EX or LOCK_SH) on path, waiting until
// ctx is done. Locks are per open file, so two goroutines of one process
// exclude each other too.
func lockFile(ctx context.Context, path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tryLock takes an exclusive flock on path if it is free at once.
func tryLock(path string) (func(), bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}
