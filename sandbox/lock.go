package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// boxLock is an exclusive flock on home/locks/<id>.lock. It serialises
// lifecycle changes of one box across goroutines and processes (flock locks
// are per open file, so two opens in one process exclude each other too).
// A holder must re-read the box row after locking: the box may have been
// destroyed while it waited.
type boxLock struct{ f *os.File }

// lockBox waits for the box's lock until ctx is done.
func lockBox(ctx context.Context, dir, id string) (*boxLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, id+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &boxLock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("flock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, Wrapf(ErrDeadlineExceeded, context.Cause(ctx), "box %s is busy (another operation holds it)", id)
		case <-time.After(wait):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// unlock releases the lock. remove also deletes the lock file (after a
// destroy); waiters then find the box row gone.
func (l *boxLock) unlock(remove bool) {
	if remove {
		os.Remove(l.f.Name())
	}
	l.f.Close() // closing the last fd releases the flock
}
