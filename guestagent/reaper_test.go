package guestagent

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReaperFindsChildren: both ways the reaper finds the agent's children
// (the kernel's per-thread list, and the scan of every process when that
// list is missing) see an exited, unwaited child, and reapOrphans leaves a
// tracked one to its exec's Wait.
func TestReaperFindsChildren(t *testing.T) {
	cmd := exec.Command("true")
	if err := startTracked(cmd); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() {
		untrack(pid)
		cmd.Wait()
	}()
	for i := 0; ; i++ {
		b, _ := os.ReadFile("/proc/" + itoa(pid) + "/stat")
		if s := string(b); strings.Contains(s[strings.LastIndexByte(s, ')')+1:], " Z ") {
			break
		}
		if i == 1000 {
			t.Fatalf("the child did not exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if kids, ok := listChildren(); ok && !slices.Contains(kids, pid) {
		t.Errorf("the kernel's list %v lacks the child %d", kids, pid)
	} else if !ok {
		t.Log("no /proc/self/task/*/children here: only the scan is tested")
	}
	if z := zombieChildren(); !slices.Contains(z, pid) {
		t.Errorf("the scan %v lacks the zombie %d", z, pid)
	}
	// An untracked one (an orphan) is reaped; the tracked one is left.
	orphan := exec.Command("true")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	opid := orphan.Process.Pid
	for i := 0; ; i++ {
		reapOrphans()
		if _, err := os.Stat("/proc/" + itoa(opid)); err != nil {
			break
		}
		if i == 1000 {
			t.Fatalf("the untracked child %d was not reaped", opid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat("/proc/" + itoa(pid)); err != nil {
		t.Fatalf("a tracked child was reaped by the reaper: its exec's Wait would fail")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
