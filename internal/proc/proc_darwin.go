package proc

import (
	"context"
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// sZomb is p_stat of a zombie (<sys/proc.h> SZOMB).
const sZomb = 5

// kinfo returns the kernel's record of pid (nil, nil when there is none:
// sysctl then answers with no record, which SysctlKinfoProc reports as EIO).
func kinfo(pid int) (*unix.KinfoProc, error) {
	k, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if errors.Is(err, unix.EIO) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if k.Proc.P_pid != int32(pid) {
		return nil, nil
	}
	return k, nil
}

// StartTime returns pid's start time in microseconds since the epoch.
func StartTime(pid int) (uint64, error) {
	k, err := kinfo(pid)
	if err != nil {
		return 0, err
	}
	if k == nil {
		return 0, syscall.ESRCH
	}
	tv := k.Proc.P_starttime
	return uint64(tv.Sec)*1e6 + uint64(tv.Usec), nil
}

// Alive reports whether the process named by id still runs: the pid exists,
// has the same start time, and is not a zombie.
func (id ID) Alive() bool {
	if id.PID <= 0 {
		return false
	}
	k, err := kinfo(id.PID)
	if err != nil || k == nil || k.Proc.P_stat == sZomb {
		return false
	}
	tv := k.Proc.P_starttime
	return uint64(tv.Sec)*1e6+uint64(tv.Usec) == id.StartTime
}

// Signal sends sig to the process if it is still the same instance (a
// checked kill: racy, but narrow). A gone process is not an error.
func (id ID) Signal(sig syscall.Signal) error {
	if !id.Alive() {
		return nil
	}
	return ignoreESRCH(syscall.Kill(id.PID, sig))
}

// Exited blocks until the process has exited (nil) or ctx ends (its
// error), by polling.
func (id ID) Exited(ctx context.Context) error {
	if id.PID <= 0 {
		return nil
	}
	return id.pollExited(ctx)
}

// BootID returns the kernel's boot session id, which changes at every boot.
func BootID() (string, error) {
	s, err := unix.Sysctl("kern.bootsessionuuid")
	if err == nil && s == "" {
		err = errors.New("empty kern.bootsessionuuid")
	}
	return s, err
}
