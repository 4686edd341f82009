package qemu_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

const childEnv = "BOXLITE_QEMU_TEST_CHILD" // home|box id: TestHelperStartInChild starts that box

// TestHelperStartInChild is not a test: it is the "server" that
// crashDuringBoot re-executes and kills while its box boots. Its QEMU does
// not die with it (no DieWithParent), like a real box's.
func TestHelperStartInChild(t *testing.T) {
	home, id, ok := strings.Cut(os.Getenv(childEnv), "|")
	if !ok {
		t.Skip("helper process only")
	}
	eng := qemu.New(qemu.Config{Home: home, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if _, err := eng.Start(context.Background(), specFor(home, id)); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("STARTED\n")
	select {} // a server that goes on running
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

// vmmsOf returns the live QEMU processes whose command line names boxDir.
func vmmsOf(boxDir string) []proc.ID {
	var ids []proc.ID
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		argv0, _, _ := bytes.Cut(b, []byte{0})
		if err != nil || !bytes.Contains(b, []byte(boxDir+"/")) || !strings.HasPrefix(filepath.Base(string(argv0)), "qemu-system") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if id, err := proc.Of(pid); err == nil && id.Alive() {
			ids = append(ids, id)
		}
	}
	return ids
}

// holdsDisk reports whether process id has the box's disk open (QEMU
// opens it, and takes its write lock, before the guest boots).
func holdsDisk(id proc.ID, disk string) bool {
	fds, _ := filepath.Glob("/proc/" + strconv.Itoa(id.PID) + "/fd/*")
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); target == disk {
			return true
		}
	}
	return false
}

// crashDuringBoot starts a box in a child process playing the server,
// SIGKILLs that child as soon as its QEMU exists (long before the agent's
// hello under TCG), and returns the box's spec and the orphaned QEMU, once
// that QEMU holds the box's disk (the state the incident of issue 16 left).
func crashDuringBoot(t *testing.T, home string) (sandbox.Spec, proc.ID) {
	t.Helper()
	id := persist.NewID()
	spec := specFor(home, id)
	var out lockedBuffer
	child := exec.Command(os.Args[0], "-test.run=^TestHelperStartInChild$", "-test.v")
	child.Env = append(os.Environ(), childEnv+"="+home+"|"+id)
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var vmm proc.ID
	t.Cleanup(func() { // whatever the outcome, no VM outlives the test
		child.Process.Kill()
		for _, p := range vmmsOf(spec.BoxDir) {
			p.KillGroup()
		}
	})
	until(t, "the child's QEMU to start", func() bool {
		if ids := vmmsOf(spec.BoxDir); len(ids) == 1 {
			vmm = ids[0]
			return true
		}
		return false
	})
	child.Process.Kill()
	child.Wait()
	t.Logf("server killed while its box booted:\n%s", out.String())
	if strings.Contains(out.String(), "STARTED") {
		t.Fatal("the box said hello before the server was killed; the test did not test a crash during boot")
	}
	disk := filepath.Join(spec.BoxDir, sandbox.DiskFile)
	until(t, "the orphaned QEMU to open the box's disk", func() bool { return holdsDisk(vmm, disk) })
	return spec, vmm
}

// builtImageHome and until are the engine tests' shared helpers.
func builtImageHome(t *testing.T) string { return enginetest.BuiltImageHome(t) }

func until(t *testing.T, what string, cond func() bool) { t.Helper(); enginetest.Until(t, what, cond) }

// TestQemuServerKilledDuringBoot is the incident of issue 16: a server
// SIGKILLed while a qemu box booted left QEMU running with no engine state
// in the registry. The next server's Recover and Destroy, given a zero
// handle, must find that QEMU through the box directory and kill it.
func TestQemuServerKilledDuringBoot(t *testing.T) {
	requireQEMU(t)
	home := builtImageHome(t)
	eng := newEngine(t, home, qemu.Config{})
	enginetest.KilledDuringBoot(t, eng, "QEMU", func(t *testing.T) (sandbox.Spec, proc.ID) { return crashDuringBoot(t, home) })
}
