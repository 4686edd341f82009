package qemu_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// TestMain lets the test binary serve as the network helper (engines run
// their own executable as the helper).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == network.HelperArg {
		os.Exit(network.HelperMain())
	}
	os.Exit(m.Run())
}

// TestQemuRunsConfined: a box's QEMU, looked at from the host while its
// guest runs Python, is what a device-emulation exploit would inherit. It
// used to be host root with every capability, no seccomp, no cgroup and the
// host's whole file system and network in view. Now: the box's own
// unprivileged uid, no capabilities, no_new_privs, seccomp, its own pid and
// network namespaces (only lo), a root with none of the host's files but
// its libraries and boot files, and a memory- and pids-limited cgroup.
func TestQemuRunsConfined(t *testing.T) {
	requireQEMU(t)
	home := testenv.Home(t)
	ctx := context.Background()
	m := server(t, home)
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "confined", MemoryMiB: 256, Network: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy(ctx, "t", b.ID)
	if out, _ := run(t, m, b.ID, "python3", "-c", "print(6*7)"); strings.TrimSpace(out) != "42" {
		t.Fatalf("python in the confined VM: %q", out)
	}
	vmms := vmmsOf(filepath.Join(home, "boxes", b.ID))
	if len(vmms) != 1 {
		t.Fatalf("QEMUs of the box: %v", vmms)
	}
	pid := vmms[0].PID
	c, err := confine.Inspect(pid)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(strings.Fields(c.UIDs)[0], 10, 32)
	if uid < sandbox.IDRangeFirst || (uid-sandbox.IDRangeFirst)%sandbox.IDRangeSize != 0 {
		t.Errorf("QEMU runs as uid %d, not the first id of a box's range", uid)
	}
	if err := c.Check(uint32(uid)); err != nil {
		t.Errorf("QEMU: %v", err)
	}
	// Its network namespace has only lo: no way to the host's loopback.
	dev, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	for _, l := range strings.Split(string(dev), "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && name != "lo" {
			t.Errorf("interface %s in QEMU's network namespace", name)
		}
	}
	// Its root: nothing of the host's but what it was given.
	root := fmt.Sprintf("/proc/%d/root", pid)
	for _, p := range []string{"root", "home", "etc/shadow", "etc/passwd", "var/lib", "sys", "work"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("QEMU sees /%s", p)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "boxlite.db")); err == nil {
		t.Error("QEMU sees the registry")
	}
	if _, err := os.Stat(filepath.Join(root, home, "boxlite.db")); err == nil {
		t.Error("QEMU sees the registry at its host path")
	}
	// Its cgroup limits memory to the guest's plus the overhead.
	info, _ := cgroups.Detect()
	for _, d := range info.Dirs(b.ID + ".vmm") {
		for _, f := range []string{"memory.limit_in_bytes", "memory.max"} {
			if v, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				lim, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				if lim <= 256<<20 || lim > 1<<30 {
					t.Errorf("%s = %d", f, lim)
				}
			}
		}
		for _, f := range []string{"memory.max_usage_in_bytes", "memory.peak"} {
			if v, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				peak, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				t.Logf("QEMU cgroup peak memory after boot and python: %d MiB (guest 256 MiB)", peak>>20)
			}
		}
	}
	if got := confine.Procs(b.ID + ".vmm"); len(got) != 1 || got[0] != pid {
		t.Errorf("VMM cgroup holds %v, want [%d]", got, pid)
	}
	if _, err := m.Destroy(ctx, "t", b.ID); err != nil {
		t.Fatal(err)
	}
	for _, d := range info.Dirs(b.ID + ".vmm") {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("VMM cgroup %s left after destroy", d)
		}
	}
	for _, d := range info.Dirs(b.ID + ".net") {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("network helper cgroup %s left after destroy", d)
		}
	}
}
