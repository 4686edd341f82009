package network

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// maxGrants caps the addresses remembered from DNS answers.
	maxGrants = 4096
	// minGrantTTL keeps an address an allowed name resolved to usable at
	// least this long, whatever the record's TTL (programs cache lookups).
	minGrantTTL = 5 * time.Minute
	// hostAddrsEvery is how often the host's own addresses are re-read.
	hostAddrsEvery = 2 * time.Second
)

// Filter decides which destinations one box may reach, and remembers the
// addresses its allowed names resolved to. Safe for concurrent use.
type Filter struct {
	// Immutable after NewFilter.
	policy    Policy
	hostAddrs func() []netip.Addr
	now       func() time.Time

	mu     sync.Mutex // guards the fields below
	host   map[netip.Addr]bool
	hostAt time.Time
	grants map[netip.Addr]grant
}

// grant is an address that names in the allow list resolved to.
type grant struct {
	entries []int // indexes into policy.Allow
	expires time.Time
}

// NewFilter returns the filter of policy p. hostAddrs lists the host's own
// addresses (nil: the interfaces of the caller's network namespace).
func NewFilter(p Policy, hostAddrs func() []netip.Addr) *Filter {
	if hostAddrs == nil {
		hostAddrs = InterfaceAddrs
	}
	return &Filter{policy: p, hostAddrs: hostAddrs, now: time.Now, grants: map[netip.Addr]grant{}}
}

// Policy returns the filter's policy.
func (f *Filter) Policy() Policy { return f.policy }

// InterfaceAddrs returns the addresses of every interface of the calling
// process's network namespace.
func InterfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

func (f *Filter) isHost(a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.host == nil || f.now().Sub(f.hostAt) > hostAddrsEvery {
		f.host = map[netip.Addr]bool{}
		for _, h := range f.hostAddrs() {
			f.host[h.Unmap()] = true
		}
		f.hostAt = f.now()
	}
	return f.host[a]
}

// Name reports whether the box may resolve name (lower case, no trailing dot).
func (f *Filter) Name(name string) bool {
	switch f.policy.Mode() {
	case "public":
		return true
	case "allowlist":
		for _, e := range f.policy.Allow {
			if e.MatchName(name) {
				return true
			}
		}
	}
	return false
}

// Answer decides whether the DNS answer "name is at a" reaches the box, and
// if so lets the box connect to a as the entries naming name allow for
// ttl (at least minGrantTTL). An answer pointing at a refused-by-default
// address is refused unless an IP or CIDR entry names that address
// explicitly: a name never unlocks one (DNS rebinding).
func (f *Filter) Answer(name string, a netip.Addr, ttl time.Duration) (bool, string) {
	a = a.Unmap()
	if reason, within := special(a, f.isHost(a)); reason != "" && !f.explicitlyListed(a, within) {
		return false, fmt.Sprintf("DNS answer points %s at %s, a %s (rebinding)", name, a, reason)
	}
	if f.policy.Mode() != "allowlist" {
		return true, ""
	}
	var idx []int
	for i, e := range f.policy.Allow {
		if e.MatchName(name) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return false, "name not in the allow list"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if _, ok := f.grants[a]; !ok && len(f.grants) >= maxGrants {
		f.sweepLocked(now)
	}
	g := f.grants[a]
	for _, i := range idx {
		if !containsInt(g.entries, i) {
			g.entries = append(g.entries, i)
		}
	}
	if exp := now.Add(max(ttl, minGrantTTL)); exp.After(g.expires) {
		g.expires = exp
	}
	f.grants[a] = g
	return true, ""
}

// sweepLocked drops expired grants, and if still full an arbitrary one.
// f.mu must be held.
func (f *Filter) sweepLocked(now time.Time) {
	for a, g := range f.grants {
		if now.After(g.expires) {
			delete(f.grants, a)
		}
	}
	for a := range f.grants {
		if len(f.grants) < maxGrants {
			break
		}
		delete(f.grants, a)
	}
}

// explicitlyListed reports whether an IP/CIDR entry names a explicitly
// (lies within every range in within), whatever its port.
func (f *Filter) explicitlyListed(a netip.Addr, within []netip.Prefix) bool {
	for _, e := range f.policy.Allow {
		if e.Prefix.IsValid() && e.Prefix.Contains(a) && explicit(e.Prefix, within) {
			return true
		}
	}
	return false
}

// Dest decides whether the box may open a connection (or UDP flow) to
// a:port. The reason of a refusal is public text.
func (f *Filter) Dest(a netip.Addr, port uint16) (bool, string) {
	a = a.Unmap()
	reason, within := special(a, f.isHost(a))
	switch f.policy.Mode() {
	case "off":
		return false, "network disabled"
	case "public":
		if reason != "" {
			return false, reason
		}
		return true, ""
	}
	for _, e := range f.policy.Allow {
		if e.Prefix.IsValid() && e.Prefix.Contains(a) && e.portOK(port) && (reason == "" || explicit(e.Prefix, within)) {
			return true, ""
		}
	}
	if reason != "" {
		return false, reason
	}
	f.mu.Lock()
	g, ok := f.grants[a]
	now := f.now()
	f.mu.Unlock()
	if ok && !now.After(g.expires) {
		for _, i := range g.entries {
			if f.policy.Allow[i].portOK(port) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("port %d not allowed for %s", port, f.policy.Allow[g.entries[0]].Raw)
	}
	return false, "not in the allow list"
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
