package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
)

// The box's side of the virtual network, the same on every engine. The
// guest is configured statically (the agent or the jail engine writes it):
// no DHCP.
const (
	MTU        = 1500
	gatewayMAC = "5a:94:ef:e4:0c:dd"
	// GuestMAC is the MAC address VM engines give the guest's NIC.
	GuestMAC = "5a:94:ef:e4:0c:ee"
)

var (
	subnet  = netip.MustParsePrefix("192.168.127.0/24")
	gateway = netip.MustParseAddr("192.168.127.1") // also the box's DNS server
	guestIP = netip.MustParseAddr("192.168.127.2")
)

// GuestConfig is how the box's interface is configured: address, gateway
// (default route), DNS server and MTU.
func GuestConfig() netconf.Config {
	return netconf.Config{Interface: "eth0", Address: netip.PrefixFrom(guestIP, subnet.Bits()), Gateway: gateway,
		Nameserver: gateway, MTU: MTU}
}

// StackConfig configures a Stack. Zero fields take defaults.
type StackConfig struct {
	// Filter decides what the box may reach (required).
	Filter *Filter
	// Recorder receives refusals (default: a new one logging to Logger).
	Recorder *Recorder
	// Resolvers are the upstream DNS servers, "ip:port" (required for
	// names to resolve; see HostResolvers).
	Resolvers []string
	// Dial opens the host side of an allowed connection (default: a
	// net.Dialer). Tests use it to keep every packet on the machine.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// MaxTCP caps concurrent TCP connections (default 256), MaxUDP
	// concurrent UDP flows (default 64), MaxDNS concurrent upstream
	// lookups (default 32). Beyond them a connection is refused at once.
	MaxTCP, MaxUDP, MaxDNS int
	Logger                 *slog.Logger
}

// Stack is one box's user-mode network: a gVisor netstack behind the
// gateway address, the switch the guest's link plugs into, the TCP/UDP
// forwarders that apply the filter, and the DNS server. Safe for
// concurrent use.
type Stack struct {
	cfg StackConfig
	log *slog.Logger
	rec *Recorder
	s   *stack.Stack
	sw  *tap.Switch
	dns *dnsServer

	tcpSlots, udpSlots chan struct{}
	closed             atomic.Bool
}

// NewStack builds a stack; attach the guest with ServeLink.
func NewStack(cfg StackConfig) (*Stack, error) {
	if cfg.Filter == nil {
		return nil, errors.New("network: StackConfig.Filter is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NewRecorder(cfg.Logger)
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.MaxTCP <= 0 {
		cfg.MaxTCP = 256
	}
	if cfg.MaxUDP <= 0 {
		cfg.MaxUDP = 64
	}
	if cfg.MaxDNS <= 0 {
		cfg.MaxDNS = 32
	}
	st := &Stack{cfg: cfg, log: cfg.Logger, rec: cfg.Recorder,
		tcpSlots: make(chan struct{}, cfg.MaxTCP), udpSlots: make(chan struct{}, cfg.MaxUDP)}

	ep, err := tap.NewLinkEndpoint(false, MTU, gatewayMAC, gateway.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("network: link endpoint: %w", err)
	}
	st.sw = tap.NewSwitch(false)
	ep.Connect(st.sw)
	st.sw.Connect(ep)

	// Packets to loopback addresses are let in (a box's root can send
	// them), so that the filter refuses them at once and reports them
	// instead of the stack dropping them silently.
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}), arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	// Bounded buffers: a box holding its connection limit with peers that
	// do not read costs at most MaxTCP times these.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 128 << 10, Max: 512 << 10}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 128 << 10, Max: 512 << 10}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	if terr := s.CreateNIC(1, ep); terr != nil {
		return nil, fmt.Errorf("network: NIC: %s", terr)
	}
	if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(gateway.As4()).WithPrefix()}, stack.AddressProperties{}); terr != nil {
		return nil, fmt.Errorf("network: gateway address: %s", terr)
	}
	// The gateway answers for every destination: connections to any
	// address reach the forwarders below, which apply the filter.
	s.SetSpoofing(1, true)
	s.SetPromiscuousMode(1, true)
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4(subnet.Masked().Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(subnet.Bits(), 32)))
	s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: 1}})
	st.s = s

	tcpFwd := tcp.NewForwarder(s, 0, 64, st.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		syn := false
		if h := header.TCP(pkt.TransportHeader().Slice()); len(h) >= header.TCPMinimumSize {
			syn = h.Flags().Contains(header.TCPFlagSyn) && !h.Flags().Contains(header.TCPFlagAck)
		}
		if !st.allowed(id, "tcp", syn) {
			return false // the stack answers with a reset
		}
		return tcpFwd.HandlePacket(id, pkt)
	})
	udpFwd := udp.NewForwarder(s, st.forwardUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if !st.allowed(id, "udp", true) {
			return false // the stack answers with ICMP port unreachable
		}
		return udpFwd.HandlePacket(id, pkt)
	})

	if st.dns, err = startDNS(st, cfg.Resolvers); err != nil {
		s.Close()
		return nil, err
	}
	return st, nil
}

// allowed applies the filter to a new flow the guest opens, recording a
// refusal when record is set.
func (st *Stack) allowed(id stack.TransportEndpointID, protocol string, record bool) bool {
	dst, ok := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	if !ok {
		return false
	}
	ok, reason := st.cfg.Filter.Dest(dst, id.LocalPort)
	if !ok && record {
		st.rec.Deny(dst.String(), id.LocalPort, protocol, reason)
	}
	return ok
}

// ServeLink attaches the guest's link and serves it until the link ends
// (the box went away) or ctx is cancelled.
func (st *Stack) ServeLink(ctx context.Context, link *packetConn) error {
	go func() {
		<-ctx.Done()
		link.Close()
	}()
	err := st.sw.Accept(ctx, link, types.VfkitProtocol)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// ServeFile serves a guest link carried by a descriptor with one frame per
// read and write (a tap device, a SOCK_SEQPACKET or SOCK_DGRAM socket). It
// takes the descriptor over and closes it.
func (st *Stack) ServeFile(ctx context.Context, fd int) error {
	link, err := fileLink(fd, "link")
	if err != nil {
		return err
	}
	return st.ServeLink(ctx, link)
}

// ServeStream serves a guest link in QEMU's stream netdev framing.
func (st *Stack) ServeStream(ctx context.Context, c net.Conn) error {
	return st.ServeLink(ctx, streamLink(c))
}

// Counters are the bytes the box sent and received (Ethernet frames).
type Counters struct {
	Sent     uint64 `json:"bytes_sent"`
	Received uint64 `json:"bytes_received"`
}

// Counters returns the stack's byte counters.
func (st *Stack) Counters() Counters {
	return Counters{Sent: atomic.LoadUint64(&st.sw.Received), Received: atomic.LoadUint64(&st.sw.Sent)}
}

// Recorder returns the stack's refusal recorder.
func (st *Stack) Recorder() *Recorder { return st.rec }

// Close stops the stack.
func (st *Stack) Close() {
	if st.closed.Swap(true) {
		return
	}
	st.dns.close()
	st.s.Close()
}

// gatewayAddr is a full address on the gateway, for the stack's own services.
func gatewayAddr(port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(gateway.As4()), Port: port}
}

// listenTCP and listenUDP open the stack's own services on the gateway.
func (st *Stack) listenTCP(port uint16) (net.Listener, error) {
	return gonet.ListenTCP(st.s, gatewayAddr(port), ipv4.ProtocolNumber)
}

func (st *Stack) listenUDP(port uint16) (net.PacketConn, error) {
	a := gatewayAddr(port)
	return gonet.DialUDP(st.s, &a, nil, ipv4.ProtocolNumber)
}
