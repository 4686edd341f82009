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
func reapOrphans() int {
	procMu.Lock()
	defer procMu.Unlock()
	self := os.Getpid()
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	n := 0
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
		ppid, _ := strconv.Atoi(f[1])
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if ppid != self {
			continue
		}
		if _, ok := tracked[pid]; ok {
			continue
		}
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid {
			n++
		}
	}
	return n
}
