package guestagent

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper collects orphaned zombies when the agent is a box's first
// process (PID 1, or a child subreaper). It must never reap a child that an
// exec is waiting for, or that exec's Wait would fail: execs register their
// pids under procMu, and the reaper skips registered pids.
var (
	procMu  sync.Mutex
	tracked = map[int]struct{}{}
)

// startTracked starts cmd and registers its pid atomically with respect to the reaper.
func startTracked(cmd *exec.Cmd) error {
	procMu.Lock()
	defer procMu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	tracked[cmd.Process.Pid] = struct{}{}
	return nil
}

func untrack(pid int) {
	procMu.Lock()
	delete(tracked, pid)
	procMu.Unlock()
}

// StartReaper makes the agent a child subreaper (a no-op for PID 1) and
// reaps untracked zombie children on every SIGCHLD and once a second.
func StartReaper() error {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
		}
	}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() {
		tick := time.NewTicker(time.Second)
		for {
			select {
			case <-ch:
			case <-tick.C:
			}
			reapOrphans()
		}
	}()
	return nil
}

// reapOrphans waits for every zombie child of ours that no exec tracks.
// It looks only at the agent's children where the kernel lists them
// (/proc/self/task/*/children): scanning every process's stat on each
// SIGCHLD cost ~100 ms of an emulated (TCG) guest's CPU after every exec.
// Without that list (CONFIG_PROC_CHILDREN off) it scans all processes.
func reapOrphans() int {
	procMu.Lock()
	defer procMu.Unlock()
	pids, ok := listChildren()
	if !ok {
		pids = zombieChildren()
	}
	n := 0
	for _, pid := range pids {
		if _, ok := tracked[pid]; ok {
			continue
		}
		// WNOHANG: a child still running is left alone.
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid {
			n++
		}
	}
	return n
}

// listChildren returns the agent's children as the kernel lists them per
// thread; ok is false when the kernel has no such list.
func listChildren() (pids []int, ok bool) {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ok = true
		for _, field := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids, ok
}

// zombieChildren scans every process for zombies whose parent is the agent.
func zombieChildren() []int {
	self := os.Getpid()
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
