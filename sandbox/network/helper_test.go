package network

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/internal/testagent"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
)

// testHelperUID is the unprivileged host uid test helpers run as.
const testHelperUID = 1_999_000_000

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperArg {
		os.Exit(HelperMain())
	}
	os.Exit(m.Run())
}

// streamGuest is a guest netstack whose link is QEMU's stream framing on
// conn, as QEMU's -netdev stream carries it.
func streamGuest(t *testing.T, conn net.Conn) *guest {
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
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	s.CreateNIC(1, ep)
	gc := GuestConfig()
	s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(gc.Address.Addr().As4()), PrefixLen: gc.Address.Bits()}},
		stack.AddressProperties{})
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(gc.Gateway.As4()), NIC: 1}})
	// The "VM": frames from the guest stack go onto the stream with a
	// length prefix, and back.
	pkt := os.NewFile(uintptr(fds[1]), "vm")
	go func() {
		b := make([]byte, 65536)
		for {
			n, err := pkt.Read(b)
			if err != nil {
				return
			}
			var h [4]byte
			binary.BigEndian.PutUint32(h[:], uint32(n))
			if _, err := conn.Write(append(h[:], b[:n]...)); err != nil {
				return
			}
		}
	}()
	go func() {
		var h [4]byte
		b := make([]byte, 65536)
		for {
			if _, err := io.ReadFull(conn, h[:]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(h[:])
			if _, err := io.ReadFull(conn, b[:n]); err != nil {
				return
			}
			pkt.Write(b[:n])
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		pkt.Close()
		s.Close()
		unix.Close(fds[0])
	})
	return &guest{s: s}
}

func startHelper(t *testing.T, p Policy, resolver string) (proc.ID, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the helper runs confined: needs root")
	}
	dir := t.TempDir()
	// sun_path is short: sockets in a short temp dir.
	sock, err := os.MkdirTemp("", "bln")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	l := Launch{Host: Host{Resolvers: []string{resolver}}, BoxID: "test-" + filepath.Base(sock), Policy: p,
		Control: filepath.Join(sock, "c"), Listen: filepath.Join(sock, "l"), Log: filepath.Join(dir, "network.log"),
		Stage: testagent.Path(t), UID: testHelperUID}
	id, err := Start(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Stop(&id)
		Release(l.BoxID)
		if t.Failed() {
			b, _ := os.ReadFile(l.Log)
			t.Logf("helper log:\n%s", b)
		}
	})
	return id, l.Control, l.Listen
}

// TestHelperStreamLink runs the helper as its own process, the way an
// engine does, with a VM-style stream link, and queries it.
func TestHelperStreamLink(t *testing.T) {
	resolver := upstream(t, map[string]string{"allowed.test": "192.0.2.10"})
	p, _ := ParsePolicy(true, []string{"allowed.test"})
	id, control, listen := startHelper(t, p, resolver)
	// It runs confined: never root, no capabilities, seccomp, its own pid
	// namespace (it used to run as host root with every capability).
	if c, err := confine.Inspect(id.PID); err != nil {
		t.Fatal(err)
	} else if err := c.Check(testHelperUID); err != nil {
		t.Errorf("network helper: %v", err)
	}
	before := time.Now()
	conn, err := net.Dial("unix", listen)
	if err != nil {
		t.Fatal(err)
	}
	g := streamGuest(t, conn)
	if m, err := g.lookup(t, "allowed.test"); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("lookup over the stream link: %v %v", m, err)
	}
	if m, err := g.lookup(t, "denied.test"); err != nil || m.Rcode != dns.RcodeNameError {
		t.Fatalf("lookup of a refused name: %v %v", m, err)
	}
	// An address the allow list does not name: refused with a reset.
	if _, err := g.hello("198.51.100.200:80"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("unlisted address: %v", err)
	}
	st, err := Query(context.Background(), control, before)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != "allowlist" || st.Sent == 0 || st.Received == 0 {
		t.Errorf("status %+v", st)
	}
	got := map[string]bool{}
	for _, d := range st.Denied {
		got[d.Host] = true
	}
	if !got["denied.test"] || !got["198.51.100.200"] || len(st.Denied) != 2 {
		t.Errorf("denied %+v", st.Denied)
	}
	// Refusals before the call are not reported with it.
	if st, err := Query(context.Background(), control, time.Now()); err != nil || len(st.Denied) != 0 {
		t.Errorf("later query: %+v %v", st, err)
	}
	// The helper ends with its link (the VM).
	conn.Close()
	if !id.Wait(5 * time.Second) {
		t.Error("the helper outlived its link")
	}
}

// TestHelperRefusesCorruptStream: a frame length no VM sends ends the
// link instead of making the helper allocate it.
func TestHelperRefusesCorruptStream(t *testing.T) {
	id, _, listen := startHelper(t, Policy{Enabled: true}, "127.0.0.1:9")
	conn, err := net.Dial("unix", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte{0xff, 0xff, 0xff, 0xf0, 1, 2, 3})
	if !id.Wait(5 * time.Second) {
		t.Error("the helper kept a corrupt link")
	}
}
