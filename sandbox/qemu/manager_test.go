package qemu_test

import (
	"bytes"
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
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

func run(t *testing.T, m *sandbox.Manager, box string, argv ...string) (string, *wire.ExecResult) {
	t.Helper()
	var out bytes.Buffer
	res, _, err := m.Exec(context.Background(), "t", box, wire.ExecRequest{Argv: argv, TimeoutMs: 120_000}, client.ExecIO{Stdout: &out, Stderr: &out})
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
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "vm", MemoryMiB: 256, Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server(t, home).Destroy(context.Background(), "t", b.ID) })

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
	if _, _, err := m.WriteFile(ctx, "t", "vm", wire.WriteFileReq{Path: "/root/f.bin", Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	// A memory hog is killed by the guest's OOM killer; the box stays usable.
	out, res := run(t, m, "vm", "python3", "-c", "x = bytearray(1 << 30); print('allocated')")
	if strings.Contains(out, "allocated") || (res.Signal != "SIGKILL" && res.ExitCode == 0) {
		t.Fatalf("hog survived: %q %+v", out, res)
	}
	// A fork bomb stays inside the VM and hits the guest's work cgroup
	// limit; its timeout kills it and the agent (outside that cgroup) lives.
	var bombErr bytes.Buffer
	res, _, err = m.Exec(ctx, "t", "vm", wire.ExecRequest{Argv: []string{"bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 600"}, TimeoutMs: 15_000},
		client.ExecIO{Stderr: &bombErr})
	// Under TCG a saturated single vCPU can starve the agent past the
	// host's deadline; either way the bomb stays inside, the host stays
	// responsive, and the box is usable again below.
	t.Logf("fork bomb: %+v err=%v stderr=%.200q", res, err, bombErr.String())
	hostStart := time.Now()
	if out, err := exec.Command("true").CombinedOutput(); err != nil || time.Since(hostStart) > 5*time.Second {
		t.Fatalf("host unresponsive during the fork bomb: %v %s", err, out)
	}
	var alive bool
	for i := 0; i < 6 && !alive; i++ {
		var out bytes.Buffer
		_, _, err := m.Exec(ctx, "t", "vm", wire.ExecRequest{Argv: []string{"echo", "alive"}, TimeoutMs: 20_000}, client.ExecIO{Stdout: &out})
		alive = err == nil && out.String() == "alive\n"
		if !alive {
			t.Logf("box not answering yet after the fork bomb: %v", err)
		}
	}
	if !alive {
		t.Fatal("the box never became usable again after the fork bomb")
	}

	// Stop and start: files survive.
	if _, err := m.Stop(ctx, "t", "vm"); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, _, err := m.ReadFile(ctx, "t", "vm", wire.ReadFileReq{Path: "/root/f.bin"}, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("after restart: %q %v", got.Bytes(), err)
	}

	// A power-off from inside marks the box stopped (not failed); the next call starts it.
	m.Exec(ctx, "t", "vm", wire.ExecRequest{Argv: []string{"sh", "-c", "sync; echo o > /proc/sysrq-trigger"}, TimeoutMs: 10_000}, client.ExecIO{})
	deadline := time.Now().Add(30 * time.Second)
	for {
		bx, _ := m.Get(ctx, "t", "vm")
		if bx.Status == sandbox.StatusStopped {
			break
		}
		if bx.Status == sandbox.StatusFailed || time.Now().After(deadline) {
			// The manager notices a dead box on its next use.
			if out, _ := run(t, m, "vm", "echo", "up"); out != "up\n" {
				t.Fatalf("after power-off: %s %q", bx.Status, out)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
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
