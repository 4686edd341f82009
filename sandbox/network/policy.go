// Package network is a box's network: one user-mode network stack per box
// on the host side (gVisor's netstack, assembled from
// github.com/containers/gvisor-tap-vsock), its own DNS, and the box's egress
// policy enforced on every connection the box opens.
//
// The stack runs in a helper process (the boxlite-mcp binary re-executed
// with HelperArg), detached like the box, so it outlives the server that
// started it and any server on the same home can query it. The guest side
// is a tap device in a jail's network namespace, QEMU's stream netdev, or
// libkrun's unix-socket network: every engine gets the same stack, the same
// addresses and the same policy.
//
// Policy (see ParsePolicy): no network unless asked; network = the public
// internet; an allow list = only the listed names, addresses and ranges.
// Whatever the mode, the host's own addresses, loopback, link-local (the
// cloud metadata service), private, CGNAT, ULA, multicast and broadcast
// addresses are refused unless an IP or CIDR entry names them; a DNS answer
// pointing a name at one of them is refused too (rebinding). A refusal is a
// TCP reset or ICMP port-unreachable at once, logged, and recorded for the
// manager to report in the call's result.
package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MaxAllowEntries caps network_allow.
const MaxAllowEntries = 64

// Policy is a box's egress policy. The zero value is "no network".
type Policy struct {
	// Enabled gives the box an interface besides lo.
	Enabled bool `json:"enabled"`
	// Allow, when non-empty, is the only set of destinations; empty with
	// Enabled means the public internet.
	Allow []Entry `json:"allow,omitempty"`
}

// Entry is one network_allow item.
type Entry struct {
	// Raw is the entry as given.
	Raw string `json:"raw"`
	// Name is a host name (lower case, no trailing dot); with Wildcard it
	// is a suffix: "*.example.com" matches every name under example.com
	// but not example.com itself.
	Name     string `json:"name,omitempty"`
	Wildcard bool   `json:"wildcard,omitempty"`
	// Prefix is an IP (a full-length prefix) or CIDR entry.
	Prefix netip.Prefix `json:"prefix,omitzero"`
	// Port restricts the entry to one destination port (0: any).
	Port uint16 `json:"port,omitempty"`
}

// Mode names the policy: "off", "public" or "allowlist".
func (p Policy) Mode() string {
	switch {
	case !p.Enabled:
		return "off"
	case len(p.Allow) == 0:
		return "public"
	}
	return "allowlist"
}

// Entries returns the allow list as given.
func (p Policy) Entries() []string {
	out := make([]string, 0, len(p.Allow))
	for _, e := range p.Allow {
		out = append(out, e.Raw)
	}
	return out
}

// String describes the policy in one line.
func (p Policy) String() string {
	switch p.Mode() {
	case "off":
		return "no network"
	case "public":
		return "public internet"
	}
	return "only " + strings.Join(p.Entries(), ", ")
}

// ParsePolicy builds the policy of create_box's network and network_allow
// arguments. An allow list implies network. Entries are host names
// ("pypi.org"), wildcards ("*.pythonhosted.org"), IPs ("192.0.2.7",
// "2001:db8::1") or CIDRs ("10.1.0.0/16"), each optionally with ":port"
// (IPv6 with a port in brackets: "[2001:db8::1]:443").
func ParsePolicy(enabled bool, allow []string) (Policy, error) {
	p := Policy{Enabled: enabled || len(allow) > 0}
	if len(allow) > MaxAllowEntries {
		return Policy{}, fmt.Errorf("network_allow has %d entries; at most %d", len(allow), MaxAllowEntries)
	}
	seen := map[string]bool{}
	for _, raw := range allow {
		e, err := ParseEntry(raw)
		if err != nil {
			return Policy{}, err
		}
		if !seen[e.Raw] {
			seen[e.Raw] = true
			p.Allow = append(p.Allow, e)
		}
	}
	return p, nil
}

// ParseEntry parses one network_allow entry.
func ParseEntry(raw string) (Entry, error) {
	s := strings.TrimSpace(raw)
	bad := func(why string) (Entry, error) {
		return Entry{}, fmt.Errorf("network_allow entry %q: %s", raw, why)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > 300 {
		return bad("too long")
	}
	e := Entry{Raw: s}
	host := s
	// A port: "host:port", "[v6]:port", "cidr:port". A bare IPv6 address
	// has several colons and no port.
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return bad("unclosed '['")
		}
		host = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return bad("expected ':port' after ']'")
			}
			port, err := parsePort(rest[1:])
			if err != nil {
				return bad(err.Error())
			}
			e.Port = port
		}
	} else if strings.Count(s, ":") == 1 {
		h, ps, _ := strings.Cut(s, ":")
		port, err := parsePort(ps)
		if err != nil {
			return bad(err.Error())
		}
		host, e.Port = h, port
	}
	if strings.Contains(host, "/") {
		pfx, err := netip.ParsePrefix(host)
		if err != nil {
			return bad("not a valid CIDR")
		}
		if pfx.Addr().Zone() != "" {
			return bad("zones are not allowed")
		}
		e.Prefix = unmapPrefix(pfx.Masked())
		return e, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return bad("zones are not allowed")
		}
		a = a.Unmap()
		e.Prefix = netip.PrefixFrom(a, a.BitLen())
		return e, nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		e.Wildcard, name = true, rest
	}
	if err := checkName(name); err != nil {
		return bad(err.Error())
	}
	if e.Wildcard && !strings.Contains(name, ".") {
		return bad("a wildcard needs at least two labels after '*.' (use network: true for everything)")
	}
	e.Name = name
	return e, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("port must be 1-65535")
	}
	return uint16(n), nil
}

// checkName accepts DNS host names: labels of letters, digits, '-' and '_'
// (1-63 bytes), 253 bytes in all.
func checkName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("not a host name, IP or CIDR")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not a host name, IP or CIDR")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q is not allowed in a host name", c)
			}
		}
	}
	return nil
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// MatchName reports whether the entry allows the host name (lower case,
// without a trailing dot).
func (e Entry) MatchName(name string) bool {
	if e.Name == "" {
		return false
	}
	if e.Wildcard {
		return strings.HasSuffix(name, "."+e.Name)
	}
	return name == e.Name
}

// portOK reports whether the entry allows the destination port.
func (e Entry) portOK(port uint16) bool { return e.Port == 0 || e.Port == port }

// specialRange is an address range refused unless an entry names it.
type specialRange struct {
	prefix netip.Prefix
	reason string
}

// specials are the ranges no box reaches by default. Their reasons are
// public text (they go into network_denied).
var specials = func() []specialRange {
	var out []specialRange
	for _, r := range []struct{ cidr, reason string }{
		{"0.0.0.0/8", "reserved address (this network)"},
		{"127.0.0.0/8", "host loopback"},
		{"10.0.0.0/8", "private address (RFC 1918)"},
		{"172.16.0.0/12", "private address (RFC 1918)"},
		{"192.168.0.0/16", "private address (RFC 1918)"},
		{"100.64.0.0/10", "carrier-grade NAT address (RFC 6598)"},
		{"169.254.0.0/16", "link-local address (cloud metadata service)"},
		{"224.0.0.0/4", "multicast address"},
		{"255.255.255.255/32", "broadcast address"},
		{"240.0.0.0/4", "reserved address"},
		{"::/128", "unspecified address"},
		{"::1/128", "host loopback"},
		{"fe80::/10", "link-local address"},
		{"fc00::/7", "unique local address (ULA)"},
		{"ff00::/8", "multicast address"},
	} {
		out = append(out, specialRange{netip.MustParsePrefix(r.cidr), r.reason})
	}
	return out
}()

// hostReason is the reason an address of the host itself is refused.
const hostReason = "address of the host"

// special returns why a is refused by default ("" if it is public
// unicast), and the ranges that an entry must lie within to name it
// explicitly. isHost reports whether a is one of the host's addresses.
func special(a netip.Addr, isHost bool) (reason string, within []netip.Prefix) {
	a = a.Unmap()
	for _, r := range specials {
		if r.prefix.Contains(a) {
			if reason == "" {
				reason = r.reason
			}
			within = append(within, r.prefix)
		}
	}
	if isHost {
		if reason == "" {
			reason = hostReason
		}
		within = append(within, netip.PrefixFrom(a, a.BitLen()))
	}
	return reason, within
}

// explicit reports whether entry prefix p names every range in within:
// p lies inside each of them (10.1.0.0/16 names 10/8; 0.0.0.0/0 names
// nothing special).
func explicit(p netip.Prefix, within []netip.Prefix) bool {
	for _, w := range within {
		if p.Bits() < w.Bits() || !w.Contains(p.Addr()) {
			return false
		}
	}
	return true
}

// SpecialRanges are the ranges a box reaches only when an allow-list entry
// names them (loopback, private, link-local and cloud metadata, CGNAT,
// multicast...): engines that enforce `network: true` by other means (a
// Kubernetes NetworkPolicy) refuse the same ones.
func SpecialRanges() []netip.Prefix {
	out := make([]netip.Prefix, len(specials))
	for i, r := range specials {
		out[i] = r.prefix
	}
	return out
}
