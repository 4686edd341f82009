package qemu_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

func py(t *testing.T, m *sandbox.Manager, box, code string) string {
	t.Helper()
	var out bytes.Buffer
	res, _, err := m.RunSession(context.Background(), "t", box, sandbox.SessionRequest{Name: "default", Language: "python", TimeoutMs: 120_000},
		code, sandbox.SessionIO{Stdout: &out, Stderr: &out})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("python %q: %v %+v: %s", code, err, res, out.String())
	}
	return out.String()
}

// TestQemuSnapshotClone: a memory snapshot of a running VM, which keeps
// running; two clones resume it with the parent's files and Python session
// but their own host name, environment, clock and random numbers, and
// their own disks.
func TestQemuSnapshotClone(t *testing.T) {
	requireQEMU(t)
	home := testenv.Home(t)
	ctx := context.Background()
	m := server(t, home)
	p, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "vmp", MemoryMiB: 384})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server(t, home).Destroy(context.Background(), "t", p.ID) })
	run(t, m, p.ID, "sh", "-c", "echo before > /root/state")
	py(t, m, p.ID, "secret = 6 * 7")
	sn, err := m.SnapshotBox(ctx, "t", p.ID, "vmsnap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server(t, home).DeleteSnapshot(context.Background(), "t", sn.ID) })
	if !sn.IncludesMemory || sn.Bytes <= 0 {
		t.Fatalf("snapshot %+v", sn)
	}
	// The parent runs on, session included.
	if got := py(t, m, p.ID, "print(secret)"); got != "42\n" {
		t.Fatalf("parent after snapshot: %q", got)
	}
	run(t, m, p.ID, "sh", "-c", "echo after > /root/state")

	var clones []*sandbox.Box
	var randoms []string
	for i := range 2 {
		c, err := m.Create(ctx, "t", sandbox.CreateRequest{FromSnapshot: "vmsnap", Env: map[string]string{"CLONE": "yes"}})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		t.Cleanup(func() { server(t, home).Destroy(context.Background(), "t", c.ID) })
		clones = append(clones, c)
		if got := py(t, m, c.ID, "print(secret)"); got != "42\n" {
			t.Fatalf("clone %d session: %q", i, got)
		}
		out, _ := run(t, m, c.ID, "sh", "-c", "cat /root/state; hostname; echo $CLONE $BOXLITE_BOX_ID; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 5 || lines[0] != "before" || lines[1] != c.Spec.Hostname() || lines[2] != "yes "+c.ID {
			t.Fatalf("clone %d sees %q", i, out)
		}
		randoms = append(randoms, lines[4])
	}
	if randoms[0] == randoms[1] {
		t.Fatalf("two clones read the same random bytes %s: the RNG was not reseeded", randoms[0])
	}
	run(t, m, clones[0].ID, "sh", "-c", "echo c0 > /root/state; sync")
	if out, _ := run(t, m, clones[1].ID, "cat", "/root/state"); out != "before\n" {
		t.Fatalf("clone 1 sees %q", out)
	}
	if out, _ := run(t, m, p.ID, "cat", "/root/state"); out != "after\n" {
		t.Fatalf("parent sees %q", out)
	}
	// Backed clones hold the snapshot.
	if _, err := m.DeleteSnapshot(ctx, "t", sn.ID); err == nil || !strings.Contains(sandbox.PublicMessage(err), clones[0].ID) {
		t.Fatalf("delete with backed clones: %v", err)
	}
	// A clone stopped and started again boots cold from its own disk.
	if _, err := m.Stop(ctx, "t", clones[0].ID); err != nil {
		t.Fatal(err)
	}
	if out, _ := run(t, m, clones[0].ID, "sh", "-c", "cat /root/state; hostname"); out != "c0\n"+clones[0].Spec.Hostname()+"\n" {
		t.Fatalf("restarted clone sees %q", out)
	}
}
