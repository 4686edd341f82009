package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StartTime reads pid's start time from /proc.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	fields, err := statFields(string(b))
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	// fields[0] is field 3 (state); start time is field 22.
	return strconv.ParseUint(fields[19], 10, 64)
}

// statFields returns /proc/<pid>/stat fields from the state on; the command
// name may contain spaces and parentheses, so split after its last ')'.
func statFields(s string) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, errors.New("short stat")
	}
	return f, nil
}

// Alive reports whether the process named by id still runs: the pid exists,
// has the same start time, and is not a zombie.
func (id ID) Alive() bool {
	if id.PID <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(id.PID) + "/stat")
	if err != nil {
		return false
	}
	f, err := statFields(string(b))
	if err != nil || f[0] == "Z" || f[0] == "X" {
		return false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && st == id.StartTime
}

// Signal sends sig to the process if it is still the same instance. A gone
// process is not an error.
func (id ID) Signal(sig syscall.Signal) error {
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		// No pidfd support: fall back to a checked kill (racy, but narrow).
		if !id.Alive() {
			return nil
		}
		return ignoreESRCH(syscall.Kill(id.PID, sig))
	}
	defer unix.Close(fd)
	if !id.Alive() { // the pidfd pins the pid; check it is still ours
		return nil
	}
	return ignoreESRCH(unix.PidfdSendSignal(fd, sig, nil, 0))
}

// Exited blocks until the process has exited (nil) or ctx ends (its
// error). It waits on a pidfd through the runtime's poller, so a blocked
// Exited holds no thread; kernels without pidfds get a polling loop.
func (id ID) Exited(ctx context.Context) error {
	fd, err := unix.PidfdOpen(id.PID, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) || id.PID <= 0 {
		return nil
	}
	if err != nil {
		return id.pollExited(ctx)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	if !id.Alive() { // exited, or the pid is another process's by now
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if id.Alive() {
			return err
		}
	}
	return nil
}

// BootID returns the kernel's boot id, which changes at every boot.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
