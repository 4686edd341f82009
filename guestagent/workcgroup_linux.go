package guestagent

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// WorkCgroup is where the agent starts user processes, so that they cannot
// exhaust the tasks the agent itself needs (a Go program dies when it cannot
// create a thread). Every process starts inside it, race-free:
//
//   - cgroup v2: Dir is the cgroup's directory and the child is cloned
//     straight into it (CLONE_INTO_CGROUP).
//   - cgroup v1: Tasks is the cgroup's tasks file and Back the tasks file of
//     the agent's own cgroup; the forking thread moves into the work cgroup
//     for the fork (a child inherits its parent thread's cgroup) and back.
type WorkCgroup struct {
	Dir   *os.File
	Tasks *os.File
	Back  *os.File
}

// start starts cmd inside the work cgroup (or plainly when w is nil).
func (w *WorkCgroup) start(cmd *exec.Cmd) error {
	switch {
	case w == nil:
		return startTracked(cmd)
	case w.Dir != nil:
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(w.Dir.Fd())
		return startTracked(cmd)
	case w.Tasks != nil && w.Back != nil:
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := strconv.Itoa(unix.Gettid())
		if _, err := w.Tasks.WriteString(tid); err != nil {
			return fmt.Errorf("entering the work cgroup: %w", err)
		}
		err := startTracked(cmd)
		if _, berr := w.Back.WriteString(tid); berr != nil && err == nil {
			// This thread would stay limited with the user's processes:
			// keep it locked so the runtime retires it with the goroutine.
			runtime.LockOSThread()
		}
		return err
	}
	return startTracked(cmd)
}
