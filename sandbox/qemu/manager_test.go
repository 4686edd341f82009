package qemu_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

func server(t testing.TB, home string) *sandbox.Manager {
	t.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{newEngine(t, home, qemu.Config{})},
		Logger: slog.New(slog.NewTextHandler(tw{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	return m
}

// childrenOf returns the pids whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			k, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			kids = append(kids, k)
		}
	}
	return kids
}

func run(t *testing.T, m *sandbox.Manager, box string, argv ...string) (string, *sandbox.ExecResult) {
	t.Helper()
	var out bytes.Buffer
	res, _, err := m.Exec(context.Background(), "t", box, sandbox.ExecRequest{Argv: argv, TimeoutMs: 120_000}, sandbox.ExecIO{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %v: %v", argv, err)
	}
	return out.String(), res
}

// TestQemuThroughManager runs real code in a TCG microVM through the
// manager: languages, files, hostile code, a power-off from inside, a
// stop/start and a server restart. Boots are kept few (TCG is slow).
func TestQemuThroughManager(t *testing.T) {
	requireQEMU(t)
	home := testenv.Home(t)
	ctx := context.Background()
	m := server(t, home)
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "vm", MemoryMiB: 256, DiskMiB: 6144, Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server(t, home).Destroy(context.Background(), "t", b.ID) })
	// disk_mib is larger than the image's 4 GiB file system: the agent grew
	// the root file system to the disk on first boot.
	if out, _ := run(t, m, "vm", "sh", "-c", "df -m / | awk 'NR==2 {print $2}'"); strings.TrimSpace(out) == "" || atoi(strings.TrimSpace(out)) < 5800 {
		t.Errorf("root file system is %q MiB on a 6144 MiB disk", out)
	}

	for _, tt := range []struct {
		argv []string
		want string
	}{
		{[]string{"python3", "-c", "print(6*7)"}, "42\n"},
		{[]string{"node", "-e", "console.log('js', 1+1)"}, "js 2\n"},
		{[]string{"bash", "-c", "echo $GREETING $(uname -r | cut -d- -f3) $(hostname)"}, "hello cloud vm\n"},
	} {
		if out, res := run(t, m, "vm", tt.argv...); out != tt.want || res.ExitCode != 0 {
			t.Errorf("%v = %q %+v", tt.argv, out, res)
		}
	}
	data := []byte("vm file\x00\xff")
	if _, _, err := m.WriteFile(ctx, "t", "vm", sandbox.WriteFileRequest{Path: "/root/f.bin", Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	// A memory hog is killed by the guest's OOM killer; the box stays usable.
	out, res := run(t, m, "vm", "python3", "-c", "x = bytearray(1 << 30); print('allocated')")
	if strings.Contains(out, "allocated") || (res.Signal != "SIGKILL" && res.ExitCode == 0) {
		t.Fatalf("hog survived: %q %+v", out, res)
	}
	// A fork bomb stays inside the VM, in the guest's work cgroup with its
	// pids limit; its timeout kills all of it and the agent (outside that
	// cgroup) lives on: the same boot answers afterwards. Meanwhile the host
	// runs processes and QEMU forks none. (Whether the bomb reaches the
	// limit within its 15 s depends on how fast TCG runs on the host, so
	// pids.events is only logged.)
	vmm := vmmsOf(b.Spec.BoxDir)
	if len(vmm) != 1 {
		t.Fatalf("box QEMU processes: %v", vmm)
	}
	run(t, m, "vm", "sh", "-c", "echo same-boot > /tmp/marker") // a tmpfs: gone if the VM restarted
	bootBefore, _ := run(t, m, "vm", "cat", "/proc/sys/kernel/random/boot_id")
	var bombErr bytes.Buffer
	bombDone := make(chan struct{})
	go func() {
		defer close(bombDone)
		res, _, err = m.Exec(ctx, "t", "vm", sandbox.ExecRequest{Argv: []string{"bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 600"}, TimeoutMs: 15_000},
			sandbox.ExecIO{Stderr: &bombErr})
	}()
	for probes := 0; ; probes++ {
		if out, err := exec.Command("true").CombinedOutput(); err != nil {
			t.Fatalf("the host cannot run a process during the fork bomb: %v %s", err, out)
		}
		if kids := childrenOf(vmm[0].PID); len(kids) > 0 {
			t.Fatalf("QEMU has child processes on the host during the fork bomb: %v", kids)
		}
		select {
		case <-bombDone:
		case <-time.After(500 * time.Millisecond):
			continue
		}
		break
	}
	t.Logf("fork bomb: %+v err=%v stderr=%.200q", res, err, bombErr.String())
	switch {
	case err == nil && !res.TimedOut:
		t.Fatalf("the fork bomb ended without its timeout: %+v", res)
	case err != nil && !errors.Is(err, sandbox.ErrDeadlineExceeded):
		// Under TCG a saturated vCPU can starve the agent past the host's
		// deadline (a DeadlineExceeded); anything else is a failure.
		t.Fatalf("fork bomb: %v", err)
	}
	var alive bool
	for i := 0; i < 6 && !alive; i++ {
		var out bytes.Buffer
		res, _, err := m.Exec(ctx, "t", "vm", sandbox.ExecRequest{Argv: []string{"cat", "/tmp/marker", "/proc/sys/kernel/random/boot_id",
			"/sys/fs/cgroup/work/pids.max", "/sys/fs/cgroup/work/pids.current", "/sys/fs/cgroup/work/pids.events"}, TimeoutMs: 20_000},
			sandbox.ExecIO{Stdout: &out})
		if err != nil {
			t.Logf("box not answering yet after the fork bomb: %v", err)
			continue
		}
		if out.Len() == 0 && res.ExitCode == 0 {
			// The agent gives up forwarding output 500 ms after the process
			// exits (guestagent/exec.go pipeGrace); a guest still busy with
			// the dying bomb can miss that. Not what this test is about.
			t.Logf("output lost right after the fork bomb: %+v", res)
			continue
		}
		alive = true
		got := out.String()
		if !strings.HasPrefix(got, "same-boot\n"+bootBefore) {
			t.Fatalf("the box did not survive the fork bomb (restarted?): %q, boot id before %q", got, bootBefore)
		}
		// Left in the work cgroup: the cat itself; limit 512 (writeInitrd).
		rest := strings.Fields(strings.TrimPrefix(got, "same-boot\n"+bootBefore))
		if len(rest) < 2 || rest[0] != "512" || rest[1] != "1" {
			t.Errorf("after the fork bomb the work cgroup has pids.max, pids.current = %q; want 512, 1 (the bomb all killed)", rest)
		}
		t.Logf("work cgroup after the fork bomb: %q", rest)
	}
	if !alive {
		t.Fatal("the box never answered again after the fork bomb")
	}
	if gone := vmmsOf(b.Spec.BoxDir); len(gone) != 1 || gone[0] != vmm[0] {
		t.Fatalf("the box's QEMU changed during the fork bomb: %v, was %v", gone, vmm)
	}

	// Stop and start: files survive.
	if _, err := m.Stop(ctx, "t", "vm"); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, _, err := m.ReadFile(ctx, "t", "vm", sandbox.ReadFileRequest{Path: "/root/f.bin"}, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("after restart: %q %v", got.Bytes(), err)
	}

	// A power-off from inside ends QEMU (-no-reboot); this server's exit
	// watcher records the box stopped (not failed), and the next call
	// starts it again: a new boot with the same disk.
	vmm = vmmsOf(b.Spec.BoxDir)
	if len(vmm) != 1 {
		t.Fatalf("box QEMU processes: %v", vmm)
	}
	bootBefore, _ = run(t, m, "vm", "cat", "/proc/sys/kernel/random/boot_id")
	m.Exec(ctx, "t", "vm", sandbox.ExecRequest{Argv: []string{"sh", "-c", "sync; echo o > /proc/sysrq-trigger"}, TimeoutMs: 10_000}, sandbox.ExecIO{})
	until(t, "QEMU to exit after the power-off", func() bool { return !vmm[0].Alive() })
	until(t, "the box to be recorded as no longer running", func() bool {
		bx, err := m.Get(ctx, "t", "vm")
		return err == nil && bx.Status != sandbox.StatusRunning
	})
	if bx, _ := m.Get(ctx, "t", "vm"); bx.Status != sandbox.StatusStopped {
		t.Fatalf("after a power-off from inside the box is %s (%s); want stopped", bx.Status, bx.StatusReason)
	}
	if out, _ := run(t, m, "vm", "cat", "/proc/sys/kernel/random/boot_id", "/root/f.bin"); out == bootBefore+string(data) || !strings.HasSuffix(out, string(data)) {
		t.Fatalf("after the power-off, the next call ran in %q; want a new boot with the file kept (boot id before %q)", out, bootBefore)
	}
	if bx, _ := m.Get(ctx, "t", "vm"); bx.Status != sandbox.StatusRunning {
		t.Fatalf("after the next call the box is %s", bx.Status)
	}

	// Server restart with a running VM: recovered and usable.
	run(t, m, "vm", "true")
	m.Close()
	m2 := server(t, home)
	rep := m2.Reconcile(ctx)
	if rep.Alive != 1 {
		t.Fatalf("reconcile after restart: %+v", rep)
	}
	if out, _ := run(t, m2, "vm", "cat", "/root/f.bin"); out != string(data) {
		t.Fatalf("recovered VM: %q", out)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
