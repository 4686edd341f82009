package jail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// server is one "server process": a store and a manager with the jail engine.
func server(t testing.TB, home string) *sandbox.Manager {
	t.Helper()
	return serverWith(t, home, nil)
}

// serverWith is server with set changing the manager's config first.
func serverWith(t testing.TB, home string, set func(*sandbox.Config)) *sandbox.Manager {
	t.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{newEngine(t, home)},
		Logger: slog.New(slog.NewTextHandler(tw{t}, nil))}
	if set != nil {
		set(&cfg)
	}
	m, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	return m
}

// destroyAll destroys every box at the end of a test, so no jail outlives it.
func destroyAll(t testing.TB, m *sandbox.Manager) {
	t.Cleanup(func() {
		boxes, _ := m.List(context.Background(), "t", "")
		for _, b := range boxes {
			m.Destroy(context.Background(), "t", b.ID)
		}
	})
}

type execOut struct {
	stdout, stderr string
	res            *sandbox.ExecResult
}

func execIn(t *testing.T, m *sandbox.Manager, box string, req sandbox.ExecRequest) execOut {
	t.Helper()
	var o, e bytes.Buffer
	res, _, err := m.Exec(context.Background(), "t", box, req, sandbox.ExecIO{Stdout: &o, Stderr: &e})
	if err != nil {
		t.Fatalf("exec %v: %v", req.Argv, err)
	}
	return execOut{o.String(), e.String(), res}
}

func shIn(t *testing.T, m *sandbox.Manager, box, script string) execOut {
	t.Helper()
	return execIn(t, m, box, sandbox.ExecRequest{Argv: []string{"/bin/bash", "-c", script}, TimeoutMs: 60_000})
}

// leftovers lists what a destroyed jail box might leave on the host.
func leftovers(b *sandbox.Box) []string {
	var left []string
	for _, p := range []string{b.Spec.BoxDir, b.Spec.Socket, "/run/boxlite/mnt/" + b.ID} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/boxlite/" + b.ID)
	cgs2, _ := filepath.Glob("/sys/fs/cgroup/boxlite/" + b.ID)
	left = append(append(left, cgs...), cgs2...)
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(b.ID)) {
		left = append(left, "a mount naming the box")
	}
	return left
}

func TestJailThroughManager(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	ctx := context.Background()
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "lang", Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		argv []string
		want string
	}{
		{[]string{"python3", "-c", "import sys; print(sys.version_info[0], 6*7)"}, "3 42\n"},
		{[]string{"node", "-e", "console.log([1,2,3].map(x => x*2).join(','))"}, "2,4,6\n"},
		{[]string{"bash", "-c", "echo $GREETING $((6*7)) $(id -u) $(hostname)"}, "hello 42 0 lang\n"},
	} {
		if got := execIn(t, m, b.ID, sandbox.ExecRequest{Argv: tt.argv}); got.stdout != tt.want || got.res.ExitCode != 0 {
			t.Errorf("%v: %q (stderr %q) %+v", tt.argv, got.stdout, got.stderr, got.res)
		}
	}
	// Files: write, read back, survive a stop/start.
	data := []byte("binary\x00\xff data")
	if _, _, err := m.WriteFile(ctx, "t", b.ID, sandbox.WriteFileRequest{Path: "/root/work/data.bin", Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "t", b.ID); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, _, err := m.ReadFile(ctx, "t", b.ID, sandbox.ReadFileRequest{Path: "/root/work/data.bin"}, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("after restart: %q %v", got.Bytes(), err)
	}
	// The process inside sees its own pid namespace.
	if o := shIn(t, m, b.ID, "cat /proc/1/cmdline | tr '\\0' ' '"); !strings.Contains(o.stdout, "boxlite-guest") {
		t.Errorf("pid 1 is %q", o.stdout)
	}
	box, _ := m.Get(ctx, "t", b.ID)
	if _, err := m.Destroy(ctx, "t", b.ID); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(box); len(left) > 0 {
		t.Fatalf("left after destroy: %v", left)
	}
}

func TestJailHostileCode(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	ctx := context.Background()
	newBox := func(name string, mem int) string {
		b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: name, MemoryMiB: mem})
		if err != nil {
			t.Fatal(err)
		}
		return b.ID
	}
	// A host service on loopback that no box may reach.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("host secret\n"))
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	secret := filepath.Join(t.TempDir(), "host-secret.txt")
	os.WriteFile(secret, []byte("top secret"), 0o644)

	t.Run("fork bomb hits the pids limit", func(t *testing.T) {
		id := newBox("forkbomb", 256)
		init1 := shIn(t, m, id, "cut -d' ' -f22 /proc/1/stat").stdout
		o := execIn(t, m, id, sandbox.ExecRequest{Argv: []string{"bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 3; echo survived"}, TimeoutMs: 20_000})
		if !strings.Contains(o.stderr, "Resource temporarily unavailable") {
			t.Errorf("fork bomb did not hit the pids limit: %+v stderr=%.300q", o.res, o.stderr)
		}
		// The box stays usable afterwards, once its processes are gone (while
		// the limit is reached a new process fails with a clear error).
		for i := 0; i < 50; i++ {
			_, _, err := m.Exec(context.Background(), "t", id, sandbox.ExecRequest{Argv: []string{"bash", "-c", "kill -9 -1; true"}, TimeoutMs: 10_000}, sandbox.ExecIO{})
			if err == nil {
				break
			}
			if !errors.Is(err, sandbox.ErrResourceExhausted) {
				t.Fatalf("cleanup exec: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if o := shIn(t, m, id, "echo alive"); o.stdout != "alive\n" {
			t.Fatalf("box after fork bomb: %q", o.stdout)
		}
		// The agent (PID 1) lived through it: the box was not restarted.
		if init2 := shIn(t, m, id, "cut -d' ' -f22 /proc/1/stat").stdout; init2 != init1 {
			t.Fatalf("the box's PID 1 changed during the fork bomb (%q -> %q)", init1, init2)
		}
	})
	t.Run("memory hog is killed at the limit", func(t *testing.T) {
		id := newBox("hog", 128)
		o := execIn(t, m, id, sandbox.ExecRequest{Argv: []string{"python3", "-c", "x = bytearray(512 << 20); print('allocated')"}, TimeoutMs: 60_000})
		if o.res.Signal != "SIGKILL" || strings.Contains(o.stdout, "allocated") {
			t.Fatalf("hog: %+v %q", o.res, o.stdout)
		}
		if o := shIn(t, m, id, "echo alive"); o.stdout != "alive\n" {
			t.Fatal("box died with its hog")
		}
	})
	t.Run("1 GiB to stdout is capped", func(t *testing.T) {
		id := newBox("flood", 256)
		var n int64
		w := writerFunc(func(p []byte) (int, error) { n += int64(len(p)); return len(p), nil })
		res, _, err := m.Exec(ctx, "t", id, sandbox.ExecRequest{Argv: []string{"head", "-c", "1073741824", "/dev/zero"}, OutputLimit: 1 << 20, TimeoutMs: 120_000}, sandbox.ExecIO{Stdout: w})
		if err != nil || !res.Truncated || n != 1<<20 || res.StdoutBytes != 1<<30 {
			t.Fatalf("flood: %+v %v received=%d", res, err, n)
		}
	})
	t.Run("kill -9 -1 inside", func(t *testing.T) {
		id := newBox("killall", 256)
		shIn(t, m, id, "sleep 100 & sleep 100 & kill -9 -1; true")
		if o := shIn(t, m, id, "echo still here; ps -e -o pid= | wc -l"); !strings.HasPrefix(o.stdout, "still here\n") {
			t.Fatalf("after kill -9 -1: %q", o.stdout)
		}
	})
	t.Run("host loopback unreachable", func(t *testing.T) {
		id := newBox("noloop", 256)
		script := fmt.Sprintf(`import socket
s = socket.socket(); s.settimeout(3)
try:
    s.connect(("127.0.0.1", %d)); print("CONNECTED", s.recv(100))
except OSError as e:
    print("refused", e)`, port)
		o := execIn(t, m, id, sandbox.ExecRequest{Argv: []string{"python3", "-c", script}, TimeoutMs: 20_000})
		if !strings.HasPrefix(o.stdout, "refused") {
			t.Fatalf("box reached the host's loopback: %q %q", o.stdout, o.stderr)
		}
	})
	t.Run("network on: its own interface, host loopback still unreachable", func(t *testing.T) {
		b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "net", MemoryMiB: 256, Network: true})
		if err != nil {
			t.Fatal(err)
		}
		o := shIn(t, m, b.ID, "cat /proc/net/dev | grep -c eth0; cat /etc/resolv.conf")
		if !strings.HasPrefix(o.stdout, "1\n") || !strings.Contains(o.stdout, "nameserver 192.168.127.1") {
			t.Fatalf("no eth0 / resolver: %q %q", o.stdout, o.stderr)
		}
		script := fmt.Sprintf(`import socket
for host in ("127.0.0.1", "10.0.2.2"):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, %d)); print("CONNECTED", host)
    except OSError as e:
        print("refused", host)`, port)
		o = execIn(t, m, b.ID, sandbox.ExecRequest{Argv: []string{"python3", "-c", script}, TimeoutMs: 30_000})
		if strings.Contains(o.stdout, "CONNECTED") || strings.Count(o.stdout, "refused") != 2 {
			t.Fatalf("a box with network reached the host's loopback: %q %q", o.stdout, o.stderr)
		}
		h, err := sandbox.ReadEngineState(b.Spec.BoxDir)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Net *proc.ID `json:"net"`
		}
		if json.Unmarshal(h.State, &st); st.Net == nil || !st.Net.Alive() {
			t.Fatalf("no live network helper recorded: %s", h.State)
		}
		if _, err := m.Destroy(ctx, "t", b.ID); err != nil {
			t.Fatal(err)
		}
		if st.Net.Alive() {
			t.Fatal("the network helper outlived its box")
		}
	})
	t.Run("host files unreachable", func(t *testing.T) {
		id := newBox("nofiles", 256)
		o := shIn(t, m, id, "cat "+secret+" 2>&1; ls / ; grep -c boxlite /proc/mounts || true")
		if strings.Contains(o.stdout, "top secret") {
			t.Fatal("box read a host file")
		}
		if strings.Contains(o.stdout, "work") || strings.Contains(o.stdout, "/run/boxlite") {
			t.Fatalf("host paths visible: %q", o.stdout)
		}
	})
	t.Run("seccomp denies dangerous syscalls", func(t *testing.T) {
		id := newBox("seccomp", 256)
		script := `import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(321, 0, 0, 0)  # bpf
print("bpf", r, ctypes.get_errno())
r = libc.unshare(0x10000000)  # CLONE_NEWUSER
print("unshare", r, ctypes.get_errno())
r = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
print("mount", r, ctypes.get_errno())`
		o := execIn(t, m, id, sandbox.ExecRequest{Argv: []string{"python3", "-c", script}, TimeoutMs: 20_000})
		for _, want := range []string{"bpf -1 1", "unshare -1 1", "mount -1 1"} {
			if !strings.Contains(o.stdout, want) {
				t.Errorf("want %q in %q (stderr %q)", want, o.stdout, o.stderr)
			}
		}
	})
	// The host's own process table survived the boxes' fork bombs and
	// floods: the host can still start processes.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Fatalf("the host cannot start a process after the hostile boxes: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestJailServerRestart(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	ctx := context.Background()
	m1 := server(t, home)
	destroyAll(t, m1)
	a, err := m1.Create(ctx, "t", sandbox.CreateRequest{Name: "survivor"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m1.Create(ctx, "t", sandbox.CreateRequest{Name: "victim"})
	if err != nil {
		t.Fatal(err)
	}
	shIn(t, m1, a.ID, "echo 1 > /root/state")
	m1.Close() // the server goes away; the jails stay

	// Kill the victim's init while no server watches.
	st, _ := persist.Open(ctx, filepath.Join(home, "boxlite.db"))
	row, _ := st.Get(ctx, b.ID)
	st.Close()
	var h sandbox.Handle
	if err := jsonUnmarshal(row.EngineState, &h); err != nil {
		t.Fatal(err)
	}
	var js struct{ Proc proc.ID }
	jsonUnmarshal(h.State, &js)
	if !js.Proc.Alive() {
		t.Fatal("victim not running before the kill")
	}
	syscall.Kill(js.Proc.PID, syscall.SIGKILL)
	js.Proc.Wait(5 * time.Second)

	m2 := server(t, home)
	rep := m2.Reconcile(ctx)
	if rep.Alive != 1 || len(rep.Stopped) != 1 || rep.Stopped[0] != b.ID {
		t.Fatalf("reconcile: %+v", rep)
	}
	if o := shIn(t, m2, "survivor", "cat /root/state"); o.stdout != "1\n" {
		t.Fatalf("survivor: %q", o.stdout)
	}
	if g, _ := m2.Get(ctx, "t", "victim"); g.Status != sandbox.StatusStopped {
		t.Fatalf("victim: %s", g.Status)
	}
	if o := shIn(t, m2, "victim", "echo back"); o.stdout != "back\n" {
		t.Fatalf("victim restart: %q", o.stdout)
	}
	destroyAll(t, m2)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
