package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The "internet" of these tests: TEST-NET addresses mapped by the stack's
// dialer to listeners on this machine's loopback. Nothing leaves the machine.
type internet struct {
	mu    sync.Mutex
	hosts map[string]string // "192.0.2.10:80" → a local listener
	dials atomic.Int64
}

func (n *internet) dial(ctx context.Context, network, address string) (net.Conn, error) {
	n.dials.Add(1)
	n.mu.Lock()
	local, ok := n.hosts[network+"/"+address]
	n.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
	}
	return (&net.Dialer{}).DialContext(ctx, network, local)
}

// serve runs a TCP server at the "internet" address that says its name
// and then echoes; it returns how many connections are open at most.
func (n *internet) serve(t *testing.T, address, name string) *atomic.Int64 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	n.mu.Lock()
	if n.hosts == nil {
		n.hosts = map[string]string{}
	}
	n.hosts["tcp/"+address] = l.Addr().String()
	n.mu.Unlock()
	var open, peak atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if v := open.Add(1); v > peak.Load() {
				peak.Store(v)
			}
			go func() {
				defer open.Add(-1)
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
	return &peak
}

// upstream is a DNS server on loopback with fixed A records.
func upstream(t *testing.T, records map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if ip, ok := records[strings.TrimSuffix(q.Name, ".")]; ok && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(ip)})
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// guest is a second netstack playing the box, plugged into the stack under
// test through a SOCK_SEQPACKET pair (the framing of a tap device).
type guest struct {
	s *stack.Stack
}

func newGuest(t *testing.T, st *Stack) *guest {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(GuestMAC)
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fds[0]}, MTU: MTU, EthernetHeader: true, Address: tcpip.LinkAddress(mac)})
	if err != nil {
		t.Fatal(err)
	}
	// AllowExternalLoopbackTraffic: like Linux with route_localnet, which
	// root in a box can set.
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}), arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if terr := s.CreateNIC(1, ep); terr != nil {
		t.Fatal(terr)
	}
	gc := GuestConfig()
	s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(gc.Address.Addr().As4()), PrefixLen: gc.Address.Bits()}},
		stack.AddressProperties{})
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(gc.Gateway.As4()), NIC: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.ServeFile(ctx, fds[1])
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
		unix.Close(fds[0])
	})
	return &guest{s: s}
}

func addr(s string) tcpip.FullAddress {
	ap := netip.MustParseAddrPort(s)
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

func (g *guest) dial(address string) (net.Conn, error) {
	// The guest resolves its gateway by ARP first: three tries a second
	// apart, which a loaded 2-core machine can starve ("no route to host").
	// A Linux guest asks again on the next connect; so does this one.
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := gonet.DialContextTCP(ctx, g.s, addr(address), ipv4.ProtocolNumber)
		cancel()
		if err == nil || attempt == 2 || !strings.Contains(err.Error(), "no route to host") {
			return c, err
		}
	}
}

// hello dials address and returns the first line the server says.
func (g *guest) hello(address string) (string, error) {
	c, err := g.dial(address)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := c.Read(b)
	return strings.TrimSpace(string(b[:n])), err
}

// lookup asks the box's DNS server (the gateway) for name's A records.
func (g *guest) lookup(t *testing.T, name string) (*dns.Msg, error) {
	t.Helper()
	gw := addr(GuestConfig().Nameserver.String() + ":53")
	c, err := gonet.DialUDP(g.s, nil, &gw, ipv4.ProtocolNumber)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	conn := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMsg(m); err != nil {
		return nil, err
	}
	return conn.ReadMsg()
}

type testNet struct {
	st  *Stack
	g   *guest
	net *internet
}

func newTestNet(t *testing.T, p Policy, mod func(*StackConfig)) *testNet {
	t.Helper()
	n := &internet{}
	resolver := upstream(t, map[string]string{"allowed.test": "192.0.2.10", "other.test": "203.0.113.10",
		"rebind.test": "10.99.0.10", "loop.test": "127.0.0.1", "host.test": "198.51.100.1"})
	cfg := StackConfig{Filter: NewFilter(p, hostAddrs), Resolvers: []string{resolver}, Dial: n.dial,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	if mod != nil {
		mod(&cfg)
	}
	st, err := NewStack(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return &testNet{st: st, g: newGuest(t, st), net: n}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// denied reports whether the stack recorded a refusal of host:port.
func (tn *testNet) denied(host string, port uint16) *Denial {
	ds, _ := tn.st.Recorder().Since(time.Time{}, 0)
	for _, d := range ds {
		if d.Host == host && d.Port == port {
			return &d
		}
	}
	return nil
}

func TestStackAllowList(t *testing.T) {
	p, _ := ParsePolicy(true, []string{"192.0.2.20", "allowed.test:80", "rebind.test", "loop.test", "host.test"})
	tn := newTestNet(t, p, nil)
	tn.net.serve(t, "192.0.2.10:80", "allowed-by-name")
	tn.net.serve(t, "192.0.2.20:8080", "allowed-by-ip")
	tn.net.serve(t, "203.0.113.10:80", "other")
	tn.net.serve(t, "10.99.0.10:80", "private")
	tn.net.serve(t, "127.0.0.1:80", "host-loopback")

	if got, err := tn.g.hello("192.0.2.20:8080"); err != nil || got != "allowed-by-ip" {
		t.Errorf("allowed IP: %q, %v", got, err)
	}
	// A name's address is allowed only after the box resolved the name.
	if _, err := tn.g.hello("192.0.2.10:80"); err == nil {
		t.Error("an allowed name's address was reachable before any lookup")
	}
	m, err := tn.g.lookup(t, "allowed.test")
	if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("lookup allowed.test: %v %v", m, err)
	}
	if got, err := tn.g.hello("192.0.2.10:80"); err != nil || got != "allowed-by-name" {
		t.Errorf("allowed name: %q, %v", got, err)
	}
	// Other destinations: refused at once with a reset, and reported.
	dials := tn.net.dials.Load()
	for _, dst := range []string{"203.0.113.10:80", "10.99.0.10:80", "192.0.2.10:443"} {
		if _, err := tn.g.hello(dst); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: %v, want connection refused", dst, err)
		}
	}
	if d := tn.net.dials.Load() - dials; d != 0 {
		t.Errorf("refused connections reached the host's dialer %d times", d)
	}
	for _, want := range []struct {
		host   string
		port   uint16
		reason string
	}{
		{"203.0.113.10", 80, "not in the allow list"},
		{"10.99.0.10", 80, "RFC 1918"},
		{"192.0.2.10", 443, "port 443"},
	} {
		if d := tn.denied(want.host, want.port); d == nil || !strings.Contains(d.Reason, want.reason) {
			t.Errorf("refusal of %s:%d recorded as %+v, want reason %q", want.host, want.port, d, want.reason)
		}
	}
	// Names: only allowed ones resolve; allowed names pointing at
	// loopback, the host or private space are refused (rebinding).
	if m, err := tn.g.lookup(t, "other.test"); err != nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("lookup other.test: %v %v, want NXDOMAIN", m, err)
	}
	if d := tn.denied("other.test", 53); d == nil {
		t.Error("refused name not recorded")
	}
	for _, name := range []string{"rebind.test", "loop.test", "host.test"} {
		if m, err := tn.g.lookup(t, name); err != nil || m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Errorf("lookup %s: %v %v, want REFUSED", name, m, err)
		}
		if d := tn.denied(name, 53); d == nil || !strings.Contains(d.Reason, "rebinding") {
			t.Errorf("rebinding of %s recorded as %+v", name, d)
		}
	}
	if _, err := tn.g.hello("10.99.0.10:80"); err == nil {
		t.Error("private address reachable after a rebinding answer")
	}
	if c := tn.st.Counters(); c.Sent == 0 || c.Received == 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestStackPublic(t *testing.T) {
	tn := newTestNet(t, Policy{Enabled: true}, nil)
	tn.net.serve(t, "192.0.2.10:80", "public")
	tn.net.serve(t, "10.99.0.10:80", "private")
	tn.net.serve(t, "198.51.100.1:7070", "host")
	tn.net.serve(t, "169.254.169.254:80", "metadata")
	tn.net.serve(t, "192.168.127.1:7070", "gateway")
	if got, err := tn.g.hello("192.0.2.10:80"); err != nil || got != "public" {
		t.Errorf("public address: %q, %v", got, err)
	}
	if m, err := tn.g.lookup(t, "other.test"); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Errorf("public mode lookup: %v %v", m, err)
	}
	// Root in a box can send to 127.0.0.1 through eth0 (Linux: a
	// neighbor entry and route_localnet).
	gwMAC, _ := net.ParseMAC(gatewayMAC)
	if terr := tn.g.s.AddStaticNeighbor(1, header.IPv4ProtocolNumber, tcpip.AddrFrom4([4]byte{127, 0, 0, 1}), tcpip.LinkAddress(gwMAC)); terr != nil {
		t.Fatal(terr)
	}
	for _, dst := range []string{"10.99.0.10:80", "198.51.100.1:7070", "169.254.169.254:80", "192.168.127.1:7070", "127.0.0.1:7070"} {
		start := time.Now()
		_, err := tn.g.hello(dst)
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s with network: true: %v, want connection refused", dst, err)
			continue
		}
		t.Logf("%s: %v after %s", dst, err, time.Since(start))
		ap := netip.MustParseAddrPort(dst)
		if tn.denied(ap.Addr().String(), ap.Port()) == nil {
			t.Errorf("%s refused but not recorded (%v)", dst, err)
		}
	}
}

func TestStackUDPRefusedWithICMP(t *testing.T) {
	p, _ := ParsePolicy(true, []string{"192.0.2.10"})
	tn := newTestNet(t, p, nil)
	dst := addr("203.0.113.10:9")
	c, err := gonet.DialUDP(tn.g.s, nil, &dst, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unreachable := tn.g.s.Stats().ICMP.V4.PacketsReceived.DstUnreachable
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); unreachable.Value() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if unreachable.Value() == 0 {
		t.Error("UDP to a refused address got no ICMP destination unreachable")
	}
	if tn.denied("203.0.113.10", 9) == nil {
		t.Error("UDP refusal not recorded")
	}
}

func TestStackConnectionFloodBounded(t *testing.T) {
	const limit = 8
	tn := newTestNet(t, Policy{Enabled: true}, func(c *StackConfig) { c.MaxTCP = limit })
	peak := tn.net.serve(t, "192.0.2.10:80", "flood")
	var conns []net.Conn
	refused := 0
	for i := 0; i < 4*limit; i++ {
		c, err := tn.g.dial("192.0.2.10:80")
		if err != nil {
			refused++
			continue
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Every accepted connection is proxied: read each greeting. Under load
	// the stack may finish a guest's handshake before the refusal lands:
	// such a connection is reset (or closed) before any byte, and counts as
	// refused; one that neither answers nor ends in time is neither.
	working := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 16))
		switch {
		case n > 0:
			working++
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			refused++
		}
	}
	if working > limit || peak.Load() > limit {
		t.Errorf("%d connections work, %d reached the server at once; limit %d", working, peak.Load(), limit)
	}
	if working+refused != 4*limit || refused == 0 {
		t.Errorf("%d working + %d refused of %d", working, refused, 4*limit)
	}
	if d := tn.denied("192.0.2.10", 80); d == nil || !strings.Contains(d.Reason, "too many") {
		t.Errorf("flood refusal recorded as %+v", d)
	}
}

// TestStackBulkTransfer moves a few MiB both ways through one proxied
// connection (frames at the MTU, bounded buffers).
func TestStackBulkTransfer(t *testing.T) {
	tn := newTestNet(t, Policy{Enabled: true}, nil)
	tn.net.serve(t, "192.0.2.10:80", "echo")
	c, err := tn.g.dial("192.0.2.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	hello := make([]byte, 5)
	if _, err := io.ReadFull(c, hello); err != nil || string(hello) != "echo\n" {
		t.Fatalf("greeting %q, %v", hello, err)
	}
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go c.Write(data)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	for i := range data {
		if got[i] != data[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
}
