// Package proc identifies and supervises host processes that outlive the
// server that started them: a pid plus its start time names one process
// (a reused pid has another start time), and waiting works for non-children
// (through a pidfd on Linux, by polling on macOS).
package proc

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// ID names one process instance: a pid plus the kernel's start time of that
// pid (Linux: clock ticks since boot, /proc/<pid>/stat field 22; macOS:
// microseconds since the epoch, from sysctl kern.proc.pid).
type ID struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Of returns the ID of the running process pid.
func Of(pid int) (ID, error) {
	st, err := StartTime(pid)
	if err != nil {
		return ID{}, err
	}
	return ID{PID: pid, StartTime: st}, nil
}

// KillGroup sends SIGKILL to id's process group (the process leads it) and to the process.
func (id ID) KillGroup() error {
	if !id.Alive() {
		return nil
	}
	err := ignoreESRCH(syscall.Kill(-id.PID, syscall.SIGKILL))
	return errors.Join(err, id.Signal(syscall.SIGKILL))
}

func ignoreESRCH(err error) error {
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Wait blocks until the process has exited or timeout passes; it reports
// whether the process is gone. It works for processes that are not our
// children. It never reaps: whoever started a child owns its wait (an
// exited child counts as gone while it is a zombie).
func (id ID) Wait(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return id.Exited(ctx) == nil
}

// pollExited checks every 20 ms whether the process is gone, until ctx ends.
func (id ID) pollExited(ctx context.Context) error {
	for id.Alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
