package krun_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/krun"
)

// startConfined starts a box on the libkrun TEST DOUBLE and returns its
// spec, handle and shim (after the double's krun_start_enter: the agent it
// runs in the shim's process, with everything the shim had).
func startConfined(t *testing.T) (*krun.Engine, sandbox.Spec, sandbox.Handle, int) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	home := builtImageHome(t)
	e := newEngine(t, newFakeEnv(t, home))
	spec := specFor(home, persist.NewID())
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Destroy(context.Background(), spec, h) })
	var st struct {
		Proc proc.ID `json:"proc"`
	}
	if err := json.Unmarshal(h.State, &st); err != nil || !st.Proc.Alive() {
		t.Fatalf("no live shim in the handle %s (%v)", h.State, err)
	}
	return e, spec, h, st.Proc.PID
}

// boxRun runs script in the box through its agent.
func boxRun(t *testing.T, e *krun.Engine, spec sandbox.Spec, h sandbox.Handle, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := e.Dial(ctx, spec, h)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ctx, conn, "krun-confine-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out strings.Builder
	if _, err := c.Exec(ctx, wire.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}, client.ExecIO{Stdout: &out, Stderr: &out}); err != nil {
		t.Fatalf("exec %q: %v (%s)", script, err, out.String())
	}
	return out.String()
}

// TestKrunShimRunsConfined (libkrun TEST DOUBLE, not a VM): a box's krun
// shim, looked at from the host, is what a libkrun device-emulation exploit
// would inherit. It used to be host root with every capability, no
// seccomp, no cgroup, and the host's files and network in view. Now: the
// box's unprivileged uid, no capabilities, no_new_privs, seccomp, its own
// pid and network namespaces (only lo), a root with none of the host's
// files but its libraries, the image, its disk and its directory, and a
// memory- and pids-limited cgroup that destroy removes.
func TestKrunShimRunsConfined(t *testing.T) {
	e, spec, h, pid := startConfined(t)
	uid, _ := spec.HostIDBase()
	c, err := confine.Inspect(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(uid); err != nil {
		t.Errorf("krun shim: %v", err)
	}
	dev, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	for _, l := range strings.Split(string(dev), "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && name != "lo" {
			t.Errorf("interface %s in the shim's network namespace", name)
		}
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	for _, p := range []string{"root", "home", "etc/shadow", "etc/passwd", "var/lib", "sys", "work"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("the shim sees /%s", p)
		}
	}
	// Of the box directory it sees its disk and its own directory only.
	if _, err := os.Lstat(filepath.Join(root, spec.BoxDir, "engine.json")); err == nil {
		t.Error("the shim sees the box's engine state")
	}
	if _, err := os.Stat(filepath.Join(root, spec.BoxDir, sandbox.DiskFile)); err != nil {
		t.Errorf("the shim does not see its disk: %v", err)
	}
	// The agent the double runs (in the shim's place) sees the same.
	if out := boxRun(t, e, spec, h, "id -u; cat /etc/shadow 2>&1; ls "+spec.BoxDir); !strings.HasPrefix(out, "0\n") ||
		strings.Contains(out, "root:") || strings.Contains(out, "engine.json") {
		t.Errorf("inside the shim's root:\n%s", out)
	}
	info, _ := cgroups.Detect()
	dirs := info.Dirs(spec.ID + ".vmm")
	for _, d := range dirs {
		for _, f := range []string{"memory.limit_in_bytes", "memory.max"} {
			if v, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				lim, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				if lim <= int64(spec.MemoryMiB)<<20 || lim > int64(spec.MemoryMiB+512)<<20 {
					t.Errorf("%s = %d for a %d MiB guest", f, lim, spec.MemoryMiB)
				}
			}
		}
		for _, f := range []string{"pids.max"} {
			if v, err := os.ReadFile(filepath.Join(d, f)); err == nil && strings.TrimSpace(string(v)) == "max" {
				t.Errorf("%s/%s unlimited", d, f)
			}
		}
		for _, f := range []string{"memory.max_usage_in_bytes", "memory.peak"} {
			if v, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				peak, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				t.Logf("shim cgroup peak memory (TEST DOUBLE shim + agent, no VM): %d MiB", peak>>20)
			}
		}
	}
	if got := confine.Procs(spec.ID + ".vmm"); len(got) == 0 || got[0] != pid {
		t.Errorf("VMM cgroup holds %v, want the shim %d first", got, pid)
	}
	if err := e.Destroy(context.Background(), spec, h); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("VMM cgroup %s left after destroy", d)
		}
	}
	if _, err := os.Lstat(krun.VMMDir(spec)); err == nil {
		t.Error("the shim's directory is left after destroy")
	}
}

// TestKrunSocketSymlinkAttack (libkrun TEST DOUBLE): the shim's uid owns the
// directory of the agent's socket, so code that took over the shim can put
// a symlink where the socket was, pointing at any socket of the host (a
// daemon's, another box's agent). The server, root, must then fail to dial
// the box, not connect where the link points.
func TestKrunSocketSymlinkAttack(t *testing.T) {
	e, spec, h, _ := startConfined(t)
	decoyDir := t.TempDir()
	decoy := filepath.Join(decoyDir, "host-daemon.sock")
	l, err := net.Listen("unix", decoy)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	// The attack, from the box's uid inside its confinement.
	sock := krun.AgentSocket(spec)
	boxRun(t, e, spec, h, fmt.Sprintf("mv %s %s.moved && ln -s %s %s", sock, sock, decoy, sock))
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the attack did not plant a symlink: %v %v", fi, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := e.Dial(ctx, spec, h); err == nil {
		c.Close()
		t.Error("Dial succeeded through a symlink planted at the agent's socket")
	} else {
		t.Logf("Dial refused: %v", err)
	}
	select {
	case <-accepted:
		t.Error("the server connected to the socket the planted symlink points at")
	case <-time.After(200 * time.Millisecond):
	}
	// A socket of the wrong owner (here root's, moved into place by the
	// host for the test) is refused too: only the box's own socket counts.
	os.Remove(sock)
	if err := os.Rename(decoy, sock); err != nil {
		t.Fatal(err)
	}
	if c, err := e.Dial(ctx, spec, h); err == nil {
		c.Close()
		t.Error("Dial succeeded to a socket the box's uid does not own")
	}
}
