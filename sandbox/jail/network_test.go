package jail_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// TestMain lets the test binary serve as the boxes' network helper, as
// boxlite-mcp does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == network.HelperArg {
		os.Exit(network.HelperMain())
	}
	os.Exit(m.Run())
}

// probe is a Python program run in a box: for each "label host port" line
// of stdin it resolves and connects, and prints one JSON result per line.
const probe = `import json, socket, sys, time
for line in sys.stdin.read().split("\n"):
    if not line.strip():
        continue
    label, host, port = line.split()
    t0 = time.time(); r = {"label": label}
    try:
        addr = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        r["addr"] = addr
        s = socket.create_connection((addr, int(port)), timeout=8)
        s.settimeout(8)
        r["said"] = s.recv(64).decode().strip()
        s.close()
    except Exception as e:
        r["err"] = type(e).__name__ + ": " + str(e)
    r["ms"] = int((time.time() - t0) * 1000)
    print(json.dumps(r), flush=True)
`

type probeResult struct {
	Label, Addr, Said, Err string
	Ms                     int
}

func runProbe(t *testing.T, m *sandbox.Manager, box string, targets []string) map[string]probeResult {
	t.Helper()
	o := execIn(t, m, box, sandbox.ExecRequest{Argv: []string{"python3", "-c", probe}, Stdin: []byte(strings.Join(targets, "\n")), TimeoutMs: 120_000})
	out := map[string]probeResult{}
	for _, line := range strings.Split(strings.TrimSpace(o.stdout), "\n") {
		var r probeResult
		if json.Unmarshal([]byte(line), &r) == nil {
			out[r.Label] = r
		}
	}
	if len(out) != len(targets) {
		t.Fatalf("probe: %q %q", o.stdout, o.stderr)
	}
	return out
}

// TestJailNetwork drives jail boxes with each network policy against the
// lab internet (internal/testenv.NetLab): the server side runs in the lab's
// host namespace.
func TestJailNetwork(t *testing.T) {
	lab := testenv.InNetLab()
	if lab == nil {
		testenv.RequireRoot(t)
		testenv.Image(t) // build or refresh it here, not in the child
		testenv.NewNetLab(t).RunInHost(t, "TestJailNetwork")
		return
	}
	lab.ServeDNS(t)
	lab.Serve(t, testenv.LabPublic+":80", "public")
	lab.Serve(t, testenv.LabOther+":80", "other")
	lab.Serve(t, testenv.LabPrivate+":80", "private")
	// Services of the host itself: on all its addresses, and on loopback.
	hostSvc, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostSvc.Close()
	go func() {
		for {
			c, err := hostSvc.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "host")
			c.Close()
		}
	}()
	hostPort := strconv.Itoa(hostSvc.Addr().(*net.TCPAddr).Port)

	home := testenv.Home(t)
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	eng := jail.New(jail.Config{Home: home, Logger: slog.New(slog.NewTextHandler(tw{t}, nil)),
		Net: network.Host{Resolvers: []string{testenv.LabDNS}}})
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}, Logger: slog.New(slog.NewTextHandler(tw{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	destroyAll(t, m)
	ctx := context.Background()
	create := func(req sandbox.CreateRequest) *sandbox.Box {
		t.Helper()
		req.MemoryMiB = 256
		b, err := m.Create(ctx, "t", req)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	refusedFast := func(r probeResult) bool { return strings.Contains(r.Err, "ConnectionRefused") && r.Ms < 3000 }

	t.Run("no network: only lo", func(t *testing.T) {
		b := create(sandbox.CreateRequest{Name: "off"})
		o := execIn(t, m, b.ID, sandbox.ExecRequest{Argv: []string{"python3", "-c", "import socket; print([n for _, n in socket.if_nameindex()])"}, TimeoutMs: 20_000})
		if strings.TrimSpace(o.stdout) != "['lo']" {
			t.Fatalf("interfaces of a box without network: %q %q", o.stdout, o.stderr)
		}
	})

	t.Run("allow list", func(t *testing.T) {
		b := create(sandbox.CreateRequest{Name: "allow", NetworkAllow: []string{"allowed.test", testenv.LabOther + ":80", "rebind.test"}})
		o := shIn(t, m, b.ID, "cat /etc/resolv.conf; python3 -c 'import socket; print([n for _, n in socket.if_nameindex()])'")
		if !strings.Contains(o.stdout, "nameserver 192.168.127.1") || !strings.Contains(o.stdout, "'eth0'") {
			t.Fatalf("resolver/interfaces: %q %q", o.stdout, o.stderr)
		}
		since := time.Now()
		r := runProbe(t, m, b.ID, []string{
			"name allowed.test 80",
			"ip " + testenv.LabOther + " 80",
			"unlisted_name other.test 80",
			"private " + testenv.LabPrivate + " 80",
			"rebind rebind.test 80",
			"host_addr " + testenv.LabHostAddr + " " + hostPort,
			"gateway 192.168.127.1 " + hostPort,
			"slirp_alias 10.0.2.2 " + hostPort,
		})
		if r["name"].Said != "public" || r["ip"].Said != "other" {
			t.Errorf("allowed destinations: %+v %+v", r["name"], r["ip"])
		}
		for _, l := range []string{"private", "host_addr", "gateway", "slirp_alias"} {
			if !refusedFast(r[l]) {
				t.Errorf("%s: %+v, want refused at once", l, r[l])
			}
		}
		for _, l := range []string{"unlisted_name", "rebind"} {
			if r[l].Err == "" || !strings.Contains(r[l].Err, "gaierror") {
				t.Errorf("%s resolved: %+v", l, r[l])
			}
		}
		s, err := network.Query(ctx, network.ControlPath(b.Spec.Socket), since)
		if err != nil {
			t.Fatal(err)
		}
		denied := map[string]string{}
		for _, d := range s.Denied {
			denied[d.Host] = d.Reason
		}
		for host, reason := range map[string]string{"other.test": "allow list", testenv.LabPrivate: "RFC 1918", "rebind.test": "rebinding",
			testenv.LabHostAddr: "address of the host", "192.168.127.1": "RFC 1918", "10.0.2.2": "RFC 1918"} {
			if !strings.Contains(denied[host], reason) {
				t.Errorf("refusal of %s reported as %q, want %q (all: %+v)", host, denied[host], reason, s.Denied)
			}
		}
		if s.Mode != "allowlist" || s.Sent == 0 || s.Received == 0 {
			t.Errorf("status %+v", s)
		}
	})

	t.Run("public internet", func(t *testing.T) {
		b := create(sandbox.CreateRequest{Name: "public", Network: true})
		r := runProbe(t, m, b.ID, []string{
			"public allowed.test 80",
			"other other.test 80",
			"private " + testenv.LabPrivate + " 80",
			"rebind rebind.test 80",
			"host_addr " + testenv.LabHostAddr + " " + hostPort,
			"host_name host.test " + hostPort,
			"gateway 192.168.127.1 " + hostPort,
			"metadata 169.254.169.254 80",
		})
		if r["public"].Said != "public" || r["other"].Said != "other" {
			t.Errorf("public destinations: %+v %+v", r["public"], r["other"])
		}
		for _, l := range []string{"private", "host_addr", "gateway", "metadata"} {
			if !refusedFast(r[l]) {
				t.Errorf("%s: %+v, want refused at once", l, r[l])
			}
		}
		for _, l := range []string{"rebind", "host_name"} {
			if !strings.Contains(r[l].Err, "gaierror") {
				t.Errorf("%s: %+v, want the name refused (rebinding)", l, r[l])
			}
		}
	})

	t.Run("connection flood stays bounded", func(t *testing.T) {
		peak := lab.Serve(t, testenv.LabPublic+":81", "flood")
		b := create(sandbox.CreateRequest{Name: "flood", Network: true})
		script := fmt.Sprintf(`import socket
ok, refused, other, conns = 0, 0, 0, []
for i in range(600):
    try:
        s = socket.create_connection(("%s", 81), timeout=5); conns.append(s); ok += 1
    except ConnectionRefusedError:
        refused += 1
    except Exception:
        other += 1
print(ok, refused, other, flush=True)`, testenv.LabPublic)
		o := execIn(t, m, b.ID, sandbox.ExecRequest{Argv: []string{"python3", "-c", script}, TimeoutMs: 120_000})
		var ok, refused, other int
		fmt.Sscan(o.stdout, &ok, &refused, &other)
		if ok == 0 || ok > 256 || ok+refused != 600 || other != 0 {
			t.Errorf("flood: %d connected, %d refused, %d other (%q %q); want at most 256 through, the rest refused", ok, refused, other, o.stdout, o.stderr)
		}
		if n := peak(); n > 256 {
			t.Errorf("%d connections reached the server at once", n)
		}
	})
}
