//go:build amd64

package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The attack test runs the compiled tester (testdata/seccomp_attack.c) under
// the jail's confinement, loaded by loadSeccompFilter exactly as enterJail
// does, in a child process that, like the jail's agent, is root and PID 1 of
// new user, mount and pid namespaces. The tester attacks that PID 1.

const (
	envHelper  = "BOXLITE_SECCOMP_HELPER"  // set: TestSeccompHelperProcess is the confined child
	envTester  = "BOXLITE_SECCOMP_TESTER"  // the tester binary
	envScratch = "BOXLITE_SECCOMP_SCRATCH" // a directory for the mount probes
	envCgroup  = "BOXLITE_SECCOMP_CGROUP"  // optional: a cgroup v2 directory for CLONE_INTO_CGROUP
)

// attackProbes are the tester's attacks; each must be refused. want, when
// set, is the refusal the filter itself decides (the others are the
// kernel's: an errno that varies with the kernel and the probe).
var attackProbes = []struct{ name, want string }{
	{"i386_unshare_newuser", ""}, // SIGSYS where the kernel has the i386 ABI (checked below)
	{"i386_mount", ""},
	{"i386_keyctl", ""},
	{"i386_ptrace_attach", ""},
	{"x32_unshare_newuser", "killed by SIGSYS"},
	{"x32_getpid", "killed by SIGSYS"},
	{"io_uring_setup", "EPERM"},
	{"unshare_newuser", "EPERM"},
	{"clone3_newuser", ""}, // the namespace limit: ENOSPC
	{"mount", "EPERM"},
	{"keyctl", "EPERM"},
	{"ptrace_attach", ""}, // non-dumpable agent, no CAP_SYS_PTRACE: EPERM
	{"process_vm_readv", ""},
	{"proc_mem_open", ""},
	{"proc_fd_open", ""},
	{"pidfd_getfd", "EPERM"},
	{"socket_vsock", "EAFNOSUPPORT"},
}

// controlProbes must succeed: a normal userland and the agent keep working.
var controlProbes = []string{
	"control_thread", "control_fork", "control_socket_netlink", "control_unknown_is_enosys",
	"load_filter", "agent_nondumpable", "userland_sh", "userland_python_threads",
}

// probeResult is one tester line: "allowed" or "refused", and a detail.
type probeResult struct{ result, detail string }

func parseProbes(out []byte) map[string]probeResult {
	res := map[string]probeResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Split(sc.Text(), "\t"); len(f) == 3 {
			res[f[0]] = probeResult{f[1], f[2]}
		}
	}
	return res
}

func TestSeccompJailFilterRefusesAttacks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the confined child is root of new user, mount and pid namespaces")
	}
	tester := buildTester(t)
	abi, err := exec.Command(tester, "--abi-check").Output()
	if err != nil {
		t.Fatalf("tester --abi-check: %v", err)
	}
	hasI386 := strings.TrimSpace(string(abi)) == "i386 yes"
	if !hasI386 {
		t.Log("this kernel runs no i386 calls (IA-32 emulation off): int $0x80 raises SIGSEGV before the filter; " +
			"the filter's i386 verdict is covered by TestSeccompProfileVerdicts")
	}
	scratch := t.TempDir()
	cgroup := testCgroupV2(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cgoFreeSelf(t), "-test.run=^TestSeccompHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelper+"=1", envTester+"="+tester, envScratch+"="+scratch, envCgroup+"="+cgroup)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("confined child:\n%s", out)
	if err != nil {
		t.Fatalf("confined child: %v", err)
	}
	res := parseProbes(out)
	for _, p := range attackProbes {
		got, ok := res[p.name]
		want := p.want
		if hasI386 && strings.HasPrefix(p.name, "i386_") {
			want = "killed by SIGSYS"
		}
		switch {
		case !ok:
			t.Errorf("%s: no result", p.name)
		case got.result != "refused":
			t.Errorf("%s: the attack worked (%s)", p.name, got.detail)
		case want != "" && got.detail != want:
			t.Errorf("%s: refused with %s, want %s", p.name, got.detail, want)
		}
	}
	controls := controlProbes
	if cgroup != "" {
		controls = append(controls, "agent_clone_into_cgroup")
	}
	for _, name := range controls {
		if got := res[name]; got.result != "allowed" {
			t.Errorf("%s: %s %s, want it to work", name, got.result, got.detail)
		}
	}
}

// TestSeccompHelperProcess is the confined child of
// TestSeccompJailFilterRefusesAttacks; run by itself it does nothing.
func TestSeccompHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) == "" {
		return
	}
	report := func(name string, err error) {
		if err != nil {
			fmt.Printf("%s\trefused\t%v\n", name, err)
		} else {
			fmt.Printf("%s\tallowed\t-\n", name)
		}
	}
	// A /proc of our own pid namespace, so the tester's /proc/1 is us.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Println("setup: private mounts:", err)
		os.Exit(3)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		fmt.Println("setup: mounting /proc:", err)
		os.Exit(3)
	}
	if self, _ := os.Readlink("/proc/self"); os.Getpid() != 1 || self != "1" {
		fmt.Println("setup: not PID 1 of a fresh /proc; refusing to attack the host's PID 1")
		os.Exit(3)
	}
	var cg *os.File
	if dir := os.Getenv(envCgroup); dir != "" {
		f, err := os.Open(dir)
		if err != nil {
			fmt.Println("setup: opening the cgroup:", err)
			os.Exit(3)
		}
		cg = f
	}

	report("load_filter", loadSeccompFilter()) // as enterJail does
	if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 {
		report("agent_nondumpable", fmt.Errorf("dumpable=%d %v", d, err))
	} else {
		report("agent_nondumpable", nil)
	}

	// The attacks, with the agent (us, PID 1) as the ptrace target.
	tester := exec.Command(os.Getenv(envTester), "1", os.Getenv(envScratch))
	tester.Stdout, tester.Stderr = os.Stdout, os.Stdout
	if err := tester.Run(); err != nil {
		fmt.Println("tester:", err)
	}

	// A normal userland still works.
	run := func(name string, want string, argv ...string) {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err == nil && !strings.Contains(string(out), want) {
			err = fmt.Errorf("output %q lacks %q", out, want)
		}
		report(name, err)
	}
	run("userland_sh", "ok\nbin", "sh", "-c", "echo ok; ls /")
	run("userland_python_threads", "thread ok", "python3", "-c",
		"import threading, subprocess; t = threading.Thread(target=lambda: print(subprocess.run(['echo', 'thread ok'], "+
			"capture_output=True, text=True).stdout.strip())); t.start(); t.join()")
	if _, err := exec.LookPath("node"); err == nil {
		run("userland_node", "node ok", "node", "-e", `require("fs").readFile("/proc/self/status", (e) => console.log(e ? e.message : "node ok"))`)
	}

	// The agent starts user processes straight into a cgroup v2 (clone3 with
	// CLONE_INTO_CGROUP, workcgroup_linux.go): that must keep working.
	if cg != nil {
		w := &WorkCgroup{Dir: cg}
		c := exec.Command("true")
		c.SysProcAttr = &syscall.SysProcAttr{}
		err := w.start(c)
		if err == nil {
			err = c.Wait()
		}
		report("agent_clone_into_cgroup", err)
	}
	os.Exit(0)
}

// buildTester compiles testdata/seccomp_attack.c as a static binary.
func buildTester(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc is not installed: cannot build the i386/x32 syscall tester (apt-get install gcc libc6-dev)")
	}
	bin := filepath.Join(t.TempDir(), "seccomp_attack")
	out, err := exec.Command(gcc, "-static", "-O1", "-o", bin, "testdata/seccomp_attack.c", "-lpthread").CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("cannot find -lc")) {
			t.Skipf("no static C library (libc6-dev) to build the tester: %s", out)
		}
		t.Fatalf("building the tester: %v\n%s", err, out)
	}
	return bin
}

// cgoFreeSelf returns this test binary, or a copy built without cgo when it
// has cgo: the agent is static and cuts the capability bounding set on
// every thread (syscall.AllThreadsSyscall), which cgo binaries cannot do.
func cgoFreeSelf(t *testing.T) string {
	t.Helper()
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_GETPID, 0, 0, 0); e != syscall.ENOTSUP {
		return os.Args[0]
	}
	bin := filepath.Join(t.TempDir(), "guestagent.test")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "test", "-c", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a cgo-free test binary: %v\n%s", err, out)
	}
	return bin
}

// testCgroupV2 makes an empty cgroup under a cgroup v2 mount for the
// CLONE_INTO_CGROUP check, or returns "" when the host has none.
func testCgroupV2(t *testing.T) string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && len(f) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			dir := filepath.Join(f[4], fmt.Sprintf("boxlite-seccomp-test-%d", os.Getpid()))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Logf("no CLONE_INTO_CGROUP check: %v", err)
				return ""
			}
			t.Cleanup(func() { os.Remove(dir) })
			return dir
		}
	}
	t.Log("no cgroup v2 mount: no CLONE_INTO_CGROUP check")
	return ""
}
