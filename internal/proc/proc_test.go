package proc

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIDAliveAndWait(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := Of(cmd.Process.Pid)
	if err != nil || !id.Alive() {
		t.Fatalf("Of = %+v, %v", id, err)
	}
	// Same pid, another start time: a reused pid is not our process.
	other := ID{PID: id.PID, StartTime: id.StartTime + 1}
	if other.Alive() {
		t.Fatal("a different start time counted as alive")
	}
	if err := other.Signal(syscall.SIGKILL); err != nil || !id.Alive() {
		t.Fatal("signalling a stale ID hit the live process")
	}
	if id.Wait(50 * time.Millisecond) {
		t.Fatal("Wait returned gone for a running process")
	}
	if err := id.KillGroup(); err != nil {
		t.Fatal(err)
	}
	if !id.Wait(5 * time.Second) {
		t.Fatal("process survived KillGroup")
	}
	if id.Alive() {
		t.Fatal("still alive after Wait")
	}
	if err := id.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("Signal on gone process: %v", err)
	}
	if (ID{}).Alive() {
		t.Fatal("zero ID alive")
	}
}

func TestBootID(t *testing.T) {
	id, err := BootID()
	if err != nil || len(id) < 32 {
		t.Fatalf("BootID = %q, %v", id, err)
	}
}

// TestExitedWaitsWithoutReaping: Exited returns when the process ends or
// when ctx does, holds no reap of its own (the parent's Wait gets the exit
// status), and leaves no goroutine behind.
func TestExitedWaitsWithoutReaping(t *testing.T) {
	before := runtime.NumGoroutine()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id, _ := Of(cmd.Process.Pid)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := id.Exited(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exited on a live process: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- id.Exited(context.Background()) }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Exited did not notice the exit")
	}
	// The child is still ours to reap, with its real status.
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("cmd.Wait after Exited: %v (someone else reaped the child)", err)
	}
	for i := 0; runtime.NumGoroutine() > before && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after, %d before", n, before)
	}
}
