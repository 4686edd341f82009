package guestagent_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
)

// buildAgent compiles cmd/boxlite-guest statically into a temp dir.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "boxlite-guest")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/boxlite-guest")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	return bin
}

// TestInitDutiesInNamespaces runs the real agent binary as PID 1 of a fresh
// pid+mount+uts namespace (unshare) and checks its init duties from inside.
func TestInitDutiesInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --mount --pid")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare not installed")
	}
	bin := buildAgent(t)
	// Not under /tmp: the agent mounts a tmpfs there.
	dir, err := os.MkdirTemp("/run", "agent-init-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	cmd := exec.Command(unshare, "--mount", "--pid", "--uts", "--ipc", "--fork", "--propagation", "private",
		bin, "--init", "--listen", "unix:"+sock, "--hostname", "box-under-test", "--no-devtmpfs")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not listen: %v\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := client.New(context.Background(), conn, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run := func(script string) string {
		var out bytes.Buffer
		res, err := c.Exec(context.Background(), sh(script), client.ExecIO{Stdout: &out, Stderr: &out})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%s: %+v %v\n%s", script, res, err, out.String())
		}
		return out.String()
	}
	in, err := c.Info(context.Background())
	if err != nil || in.PID != 1 || in.Hostname != "box-under-test" {
		t.Fatalf("info = %+v, %v", in, err)
	}
	mounts := run("cat /proc/mounts")
	for _, want := range []string{" /proc proc ", " /tmp tmpfs ", " /dev/shm tmpfs ", " /dev/pts devpts ", " /sys sysfs "} {
		if !strings.Contains(mounts, want) {
			t.Errorf("missing mount %q in:\n%s", want, mounts)
		}
	}
	// Orphans are re-parented to the agent (PID 1 here) and must be reaped.
	run("for i in 1 2 3 4 5; do sh -c 'sleep 0.1 &'; done; sleep 0.5")
	time.Sleep(1500 * time.Millisecond) // the reaper runs on SIGCHLD and every second
	if z := run("grep -l '^State:.Z' /proc/[0-9]*/status || true"); strings.TrimSpace(z) != "" {
		t.Fatalf("zombies left: %s", z)
	}
	// Shutdown ends PID 1 and with it the namespace.
	if err := c.Shutdown(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit after shutdown")
	}
}
