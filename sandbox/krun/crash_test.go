package krun_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/krun"
)

// childEnv carries home|box id|libkrun double dir|fake agent to
// TestHelperKrunStartInChild.
const childEnv = "BOXLITE_KRUN_TEST_CHILD"

// TestHelperKrunStartInChild is not a test: it is the "server" that
// crashDuringBoot re-executes and kills while its box boots.
func TestHelperKrunStartInChild(t *testing.T) {
	parts := strings.Split(os.Getenv(childEnv), "|")
	if len(parts) != 4 {
		t.Skip("helper process only")
	}
	home, id, libDir, agent := parts[0], parts[1], parts[2], parts[3]
	e := krun.New(krun.Config{Home: home, Library: filepath.Join(libDir, "libkrun.so.1"), SkipHypervisorCheck: true,
		ShimEnv: []string{"LD_LIBRARY_PATH=" + libDir, "FAKEKRUN_AGENT=" + agent}, HelloTimeout: time.Hour})
	_, err := e.Start(context.Background(), specFor(home, id))
	t.Fatalf("Start returned (%v); the agent stand-in never answers", err)
}

// shimOf returns the krun shim whose parent is pid, before or after it
// entered the "VM" (exec of the double's workload, a sleep).
func shimOf(parent int) (proc.ID, bool) {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		dir := filepath.Dir(p)
		if cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline")); strings.Contains(string(cmd), krun.ShimArg) || strings.HasPrefix(string(cmd), "sleep") {
			pid, _ := strconv.Atoi(filepath.Base(dir))
			id, err := proc.Of(pid)
			return id, err == nil
		}
	}
	return proc.ID{}, false
}

// crashDuringBoot starts a box in a child process playing the server,
// whose "VM" (the double's workload, a sleep) never answers the hello,
// SIGKILLs the child once the shim has entered the VM, and returns the
// box's spec and the orphaned shim.
func crashDuringBoot(t *testing.T, home, libDir string) (sandbox.Spec, proc.ID) {
	t.Helper()
	agent := filepath.Join(libDir, "agent") // the confined shim sees the double's directory
	os.WriteFile(agent, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755)
	id := persist.NewID()
	spec := specFor(home, id)
	child := exec.Command(os.Args[0], "-test.run=^TestHelperKrunStartInChild$")
	child.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{home, id, libDir, agent}, "|"))
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var shim proc.ID
	t.Cleanup(func() { // whatever the outcome, nothing outlives the test
		child.Process.Kill()
		shim.KillGroup()
	})
	until(t, "the child's shim", func() (ok bool) { shim, ok = shimOf(child.Process.Pid); return ok })
	child.Process.Kill()
	child.Wait()
	t.Logf("server killed while its box booted:\n%s", out.String())
	until(t, "the shim to enter the VM", func() bool {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(shim.PID) + "/cmdline")
		return strings.HasPrefix(string(cmd), "sleep")
	})
	return spec, shim
}

// builtImageHome and until are the engine tests' shared helpers.
func builtImageHome(t *testing.T) string { return enginetest.BuiltImageHome(t) }

func until(t *testing.T, what string, cond func() bool) { t.Helper(); enginetest.Until(t, what, cond) }

// TestKrunServerKilledDuringBoot: a server SIGKILLed while a box booted
// left its shim running with no engine state in the registry. The next
// server's Recover and Destroy, given a zero handle, must find that shim
// through the box directory and kill it.
func TestKrunServerKilledDuringBoot(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	home := builtImageHome(t)
	fe := newFakeEnv(t, home)
	libDir := fe.libDir
	e := newEngine(t, fe)
	enginetest.KilledDuringBoot(t, e, "shim", func(t *testing.T) (sandbox.Spec, proc.ID) { return crashDuringBoot(t, home, libDir) })
}
