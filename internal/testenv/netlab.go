package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// NetLab is a small internet on this machine for network tests, so no
// packet ever leaves it: a "host" network namespace, where the code under
// test runs (see RunInHost), and an "internet" namespace joined to it by a
// veth pair. The internet holds TEST-NET addresses as public hosts, a
// 10.x address as a private host, and a DNS server with fixed records.
// Root only; needs iproute2 and nsenter.
type NetLab struct {
	Host string `json:"host"` // namespace names (/run/netns/NAME)
	Inet string `json:"inet"`
}

// The lab's addresses.
const (
	LabHostAddr    = "198.51.100.1"  // the host's own address (veth)
	LabPublic      = "192.0.2.10"    // a public host
	LabOther       = "203.0.113.10"  // another public host
	LabPrivate     = "10.99.0.10"    // a private host (RFC 1918)
	LabDNS         = "192.0.2.53:53" // the lab's resolver
	labInetGateway = "198.51.100.2"
)

// LabRecords are the lab resolver's A records.
var LabRecords = map[string]string{
	"allowed.test": LabPublic,
	"other.test":   LabOther,
	"rebind.test":  LabPrivate, // an allowed name pointing at a private address
	"host.test":    LabHostAddr,
}

const labEnv = "BOXLITE_NETLAB"

// NewNetLab builds the lab (root only) and removes it when t ends.
func NewNetLab(t testing.TB) *NetLab {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
	tag := fmt.Sprintf("%d%d", os.Getpid()%100000, time.Now().UnixNano()%1000)
	l := &NetLab{Host: "blh" + tag, Inet: "bli" + tag}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", l.Host).Run()
		exec.Command("ip", "netns", "del", l.Inet).Run()
	})
	veth := "blv" + tag
	cmds := [][]string{
		{"netns", "add", l.Host},
		{"netns", "add", l.Inet},
		{"link", "add", veth, "netns", l.Host, "type", "veth", "peer", "name", "i0", "netns", l.Inet},
		{"-n", l.Host, "link", "set", veth, "name", "h0"},
		{"-n", l.Host, "link", "set", "lo", "up"},
		{"-n", l.Host, "link", "set", "h0", "up"},
		{"-n", l.Host, "addr", "add", LabHostAddr + "/24", "dev", "h0"},
		{"-n", l.Host, "route", "add", "default", "via", labInetGateway},
		{"-n", l.Inet, "link", "set", "lo", "up"},
		{"-n", l.Inet, "link", "set", "i0", "up"},
		{"-n", l.Inet, "addr", "add", labInetGateway + "/24", "dev", "i0"},
	}
	// The internet's hosts are addresses of its end of the veth (no
	// dummy interfaces: not every kernel has the module).
	for _, a := range []string{LabPublic + "/24", strings.TrimSuffix(LabDNS, ":53") + "/32", LabOther + "/24", LabPrivate + "/24"} {
		cmds = append(cmds, []string{"-n", l.Inet, "addr", "add", a, "dev", "i0"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return l
}

// InNetLab returns the lab a test process was re-executed in by
// RunInHost, or nil.
func InNetLab() *NetLab {
	var l NetLab
	if json.Unmarshal([]byte(os.Getenv(labEnv)), &l) != nil || l.Host == "" {
		return nil
	}
	return &l
}

// RunInHost runs test (a top-level test name of this binary) again in a
// process inside the lab's host namespace, where its code, the boxes and
// their network helpers see the lab as their internet; its output is
// logged and its failure fails t.
func (l *NetLab) RunInHost(t *testing.T, test string) {
	t.Helper()
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("needs nsenter")
	}
	env, _ := json.Marshal(l)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+l.Host, "--", os.Args[0], "-test.run", "^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), labEnv+"="+string(env))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // as it goes: the child's own -test.v output
	err := cmd.Run()
	if err != nil {
		t.Fatalf("%s failed in the lab: %v", test, err)
	}
}

// inInet runs fn on a thread in the lab's internet namespace (sockets it
// creates stay there).
func (l *NetLab) inInet(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := os.Open("/run/netns/" + l.Inet)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Serve runs a TCP server on the internet at addr ("ip:port") that writes
// name and a newline to each connection and then echoes; it returns the
// most connections that were open at once.
func (l *NetLab) Serve(t testing.TB, addr, name string) func() int {
	t.Helper()
	var ln net.Listener
	if err := l.inInet(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatalf("listening on the lab's %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	open, peak := 0, 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open++
			peak = max(peak, open)
			mu.Unlock()
			go func() {
				defer func() { mu.Lock(); open--; mu.Unlock() }()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
	return func() int { mu.Lock(); defer mu.Unlock(); return peak }
}

// ServeDNS runs the lab's resolver at LabDNS with LabRecords.
func (l *NetLab) ServeDNS(t testing.TB) {
	t.Helper()
	var pc net.PacketConn
	if err := l.inInet(func() (err error) { pc, err = net.ListenPacket("udp", LabDNS); return }); err != nil {
		t.Fatalf("lab resolver: %v", err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		ip, ok := LabRecords[strings.TrimSuffix(strings.ToLower(q.Name), ".")]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}
