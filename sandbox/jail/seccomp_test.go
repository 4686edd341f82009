package jail_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// dockerCapBnd is the bounding set of Docker's default capabilities
// (chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap,
// net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap), as
// /proc/PID/status shows it.
const dockerCapBnd = "00000000a80425fb"

// TestJailSeccompAttacks copies the i386/x32 syscall tester
// (guestagent/testdata/seccomp_attack.c) into a real jail box and runs it as
// the box's root against the box's agent (PID 1): every attack is refused,
// and the agent lives on.
func TestJailSeccompAttacks(t *testing.T) {
	testenv.RequireRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the tester probes the i386 and x32 ABIs of x86-64")
	}
	tester := buildSeccompTester(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	ctx := context.Background()
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "seccomp-abi"})
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(tester)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.WriteFile(ctx, "t", b.ID, sandbox.WriteFileRequest{Path: "/root/seccomp_attack", Mode: 0o755, Size: int64(len(bin))},
		bytes.NewReader(bin)); err != nil {
		t.Fatal(err)
	}
	start1 := shIn(t, m, b.ID, "cut -d' ' -f22 /proc/1/stat").stdout
	abi := execIn(t, m, b.ID, sandbox.ExecRequest{Argv: []string{"/root/seccomp_attack", "--abi-check"}})
	hasI386 := strings.TrimSpace(abi.stdout) == "i386 yes"
	o := execIn(t, m, b.ID, sandbox.ExecRequest{Argv: []string{"/root/seccomp_attack", "1", "/tmp"}, TimeoutMs: 60_000})
	t.Logf("tester in the box (i386 ABI in the kernel: %v):\n%s%s", hasI386, o.stdout, o.stderr)
	res := map[string][2]string{}
	sc := bufio.NewScanner(strings.NewReader(o.stdout))
	for sc.Scan() {
		if f := strings.Split(sc.Text(), "\t"); len(f) == 3 {
			res[f[0]] = [2]string{f[1], f[2]}
		}
	}
	if !strings.HasSuffix(o.stdout, "done\n") {
		t.Fatalf("the tester did not finish: %+v", o.res)
	}
	for _, name := range []string{"i386_unshare_newuser", "i386_mount", "i386_keyctl", "i386_ptrace_attach",
		"x32_unshare_newuser", "x32_getpid", "io_uring_setup", "unshare_newuser", "clone3_newuser", "mount", "keyctl",
		"ptrace_attach", "process_vm_readv", "proc_mem_open", "proc_fd_open", "pidfd_getfd", "socket_vsock"} {
		got := res[name]
		if got[0] != "refused" {
			t.Errorf("%s: the attack was not refused (%q)", name, got)
		}
		if (strings.HasPrefix(name, "x32_") || hasI386 && strings.HasPrefix(name, "i386_")) && got[1] != "killed by SIGSYS" {
			t.Errorf("%s: %q, want the foreign ABI killed by the filter (SIGSYS)", name, got[1])
		}
	}
	for _, name := range []string{"control_thread", "control_fork", "control_socket_netlink", "control_unknown_is_enosys"} {
		if got := res[name]; got[0] != "allowed" {
			t.Errorf("%s: %q, want it to work", name, got)
		}
	}

	// Root in the box with stock tools: no tracing or reading of the agent,
	// and at most Docker's capabilities.
	probe := shIn(t, m, b.ID, `python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH the agent
print("ptrace", r, os.strerror(ctypes.get_errno()))
'; cat /proc/1/environ >/dev/null 2>&1 && echo environ readable || echo environ refused
grep CapBnd /proc/self/status; id -u`)
	for _, want := range []string{"ptrace -1 Operation not permitted", "environ refused", "CapBnd:\t" + dockerCapBnd, "\n0\n"} {
		if !strings.Contains(probe.stdout, want) {
			t.Errorf("want %q in %q (stderr %q)", want, probe.stdout, probe.stderr)
		}
	}
	// The agent lived through all of it: same PID 1, still serving.
	if start2 := shIn(t, m, b.ID, "cut -d' ' -f22 /proc/1/stat").stdout; start2 != start1 || start1 == "" {
		t.Errorf("the box's PID 1 changed (%q -> %q)", start1, start2)
	}
}

// buildSeccompTester compiles the tester statically (no dependence on the
// image's C library), or skips without gcc.
func buildSeccompTester(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc is not installed: cannot build the i386/x32 syscall tester (apt-get install gcc libc6-dev)")
	}
	src := filepath.Join(testenv.RepoRoot(), "guestagent", "testdata", "seccomp_attack.c")
	bin := filepath.Join(t.TempDir(), "seccomp_attack")
	if out, err := exec.Command(gcc, "-static", "-O1", "-o", bin, src, "-lpthread").CombinedOutput(); err != nil {
		if bytes.Contains(out, []byte("cannot find -lc")) {
			t.Skipf("no static C library (libc6-dev) to build the tester: %s", out)
		}
		t.Fatalf("building the tester: %v\n%s", err, out)
	}
	return bin
}
