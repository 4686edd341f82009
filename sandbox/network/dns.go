package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// upstreamTimeout bounds one query to one upstream server.
const upstreamTimeout = 3 * time.Second

// HostResolvers returns the name servers of a resolv.conf file (the host's
// is /etc/resolv.conf) as "ip:port".
func HostResolvers(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading resolvers: %w", err)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no name server", path)
	}
	return out, nil
}

// dnsServer is the box's resolver, on the gateway's port 53 (UDP and TCP).
// Only names the filter allows resolve; answers go through the filter too
// (addresses it refuses are dropped: rebinding), and what remains lets the
// box connect to those addresses. The box has IPv4 only: AAAA queries get
// an empty answer.
type dnsServer struct {
	st        *Stack
	resolvers []string
	sem       chan struct{}
	udp, tcp  *dns.Server
}

func startDNS(st *Stack, resolvers []string) (*dnsServer, error) {
	pc, err := st.listenUDP(53)
	if err != nil {
		return nil, fmt.Errorf("network: dns (udp): %w", err)
	}
	l, err := st.listenTCP(53)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("network: dns (tcp): %w", err)
	}
	d := &dnsServer{st: st, resolvers: resolvers, sem: make(chan struct{}, st.cfg.MaxDNS)}
	d.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { d.serve(w, r, false) })}
	d.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { d.serve(w, r, true) }),
		ReadTimeout: 5 * time.Second, MaxTCPQueries: 16}
	go d.udp.ActivateAndServe()
	go d.tcp.ActivateAndServe()
	return d, nil
}

func (d *dnsServer) close() {
	d.udp.Shutdown()
	d.tcp.Shutdown()
}

func (d *dnsServer) serve(w dns.ResponseWriter, req *dns.Msg, overTCP bool) {
	m := d.answer(req)
	size := dns.MaxMsgSize
	if !overTCP {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
	}
	m.Truncate(size)
	w.WriteMsg(m)
}

// answer resolves one query under the filter.
func (d *dnsServer) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	q := req.Question[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	f := d.st.cfg.Filter
	if !f.Name(name) {
		d.st.rec.Deny(name, 53, "dns", "name not in the allow list")
		m.Rcode = dns.RcodeNameError
		return m
	}
	if q.Qclass != dns.ClassINET || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY {
		return m // nothing the box could use
	}
	if !take(d.sem) {
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	up, err := d.exchange(q)
	<-d.sem
	if err != nil {
		d.st.log.Debug("upstream dns failed", "name", name, "err", err)
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	m.Rcode = up.Rcode
	m.Ns = up.Ns
	refused := ""
	for _, rr := range up.Answer {
		switch v := rr.(type) {
		case *dns.A:
			a, ok := netip.AddrFromSlice(v.A.To4())
			if !ok {
				continue
			}
			if ok, reason := f.Answer(name, a, time.Duration(v.Hdr.Ttl)*time.Second); !ok {
				refused = reason
				continue
			}
			m.Answer = append(m.Answer, rr)
		case *dns.AAAA:
			// IPv4 only.
		default:
			m.Answer = append(m.Answer, rr)
		}
	}
	if refused != "" {
		d.st.rec.Deny(name, 53, "dns", refused)
		if !hasA(m.Answer) && q.Qtype == dns.TypeA {
			m.Answer, m.Rcode = nil, dns.RcodeRefused
		}
	}
	return m
}

func hasA(rrs []dns.RR) bool {
	for _, rr := range rrs {
		if _, ok := rr.(*dns.A); ok {
			return true
		}
	}
	return false
}

// exchange asks the upstream servers in turn (UDP, then TCP when the answer
// was truncated).
func (d *dnsServer) exchange(q dns.Question) (*dns.Msg, error) {
	if len(d.resolvers) == 0 {
		return nil, errors.New("no upstream resolver")
	}
	req := new(dns.Msg)
	req.SetQuestion(q.Name, q.Qtype)
	req.RecursionDesired = true
	req.SetEdns0(1232, false)
	var errs []error
	for _, server := range d.resolvers {
		for _, proto := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: proto, Timeout: upstreamTimeout}
			r, _, err := c.Exchange(req, server)
			if err != nil {
				errs = append(errs, err)
				break
			}
			if r.Truncated && proto == "udp" {
				continue
			}
			return r, nil
		}
	}
	return nil, errors.Join(errs...)
}
