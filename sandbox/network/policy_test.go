package network

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Entry
		wantErr string
	}{
		{in: "pypi.org", want: Entry{Raw: "pypi.org", Name: "pypi.org"}},
		{in: "PyPI.org.", want: Entry{Raw: "PyPI.org.", Name: "pypi.org"}},
		{in: "pypi.org:443", want: Entry{Raw: "pypi.org:443", Name: "pypi.org", Port: 443}},
		{in: "*.pythonhosted.org", want: Entry{Raw: "*.pythonhosted.org", Name: "pythonhosted.org", Wildcard: true}},
		{in: "192.0.2.7", want: Entry{Raw: "192.0.2.7", Prefix: netip.MustParsePrefix("192.0.2.7/32")}},
		{in: "192.0.2.7:80", want: Entry{Raw: "192.0.2.7:80", Prefix: netip.MustParsePrefix("192.0.2.7/32"), Port: 80}},
		{in: "10.1.2.3/16", want: Entry{Raw: "10.1.2.3/16", Prefix: netip.MustParsePrefix("10.1.0.0/16")}},
		{in: "10.1.0.0/16:5432", want: Entry{Raw: "10.1.0.0/16:5432", Prefix: netip.MustParsePrefix("10.1.0.0/16"), Port: 5432}},
		{in: "2001:db8::1", want: Entry{Raw: "2001:db8::1", Prefix: netip.MustParsePrefix("2001:db8::1/128")}},
		{in: "[2001:db8::1]:443", want: Entry{Raw: "[2001:db8::1]:443", Prefix: netip.MustParsePrefix("2001:db8::1/128"), Port: 443}},
		{in: "::ffff:192.0.2.1", want: Entry{Raw: "::ffff:192.0.2.1", Prefix: netip.MustParsePrefix("192.0.2.1/32")}},
		{in: "", wantErr: "empty"},
		{in: "*", wantErr: "not allowed in a host name"},
		{in: "*.com", wantErr: "two labels"},
		{in: "exa mple.com", wantErr: "not allowed"},
		{in: "a..b", wantErr: "not a host name"},
		{in: "host:0", wantErr: "port"},
		{in: "host:99999", wantErr: "port"},
		{in: "host:http", wantErr: "port"},
		{in: "10.0.0.0/33", wantErr: "CIDR"},
		{in: "[::1", wantErr: "unclosed"},
		{in: "fe80::1%eth0", wantErr: "zones"},
	} {
		got, err := ParseEntry(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseEntry(%q) = %+v, %v; want error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseEntry(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePolicyModes(t *testing.T) {
	for _, tc := range []struct {
		enabled bool
		allow   []string
		mode    string
	}{
		{false, nil, "off"},
		{true, nil, "public"},
		{false, []string{"pypi.org"}, "allowlist"}, // an allow list implies network
		{true, []string{"pypi.org", "pypi.org"}, "allowlist"},
	} {
		p, err := ParsePolicy(tc.enabled, tc.allow)
		if err != nil || p.Mode() != tc.mode {
			t.Errorf("ParsePolicy(%v, %v) = %s, %v; want %s", tc.enabled, tc.allow, p.Mode(), err, tc.mode)
		}
	}
	if p, _ := ParsePolicy(true, []string{"a.org", "a.org"}); len(p.Allow) != 1 {
		t.Errorf("duplicates kept: %v", p.Entries())
	}
	many := make([]string, MaxAllowEntries+1)
	for i := range many {
		many[i] = "a.org"
	}
	if _, err := ParsePolicy(true, many); err == nil {
		t.Error("an allow list over the cap was accepted")
	}
}

// hostAddrs is the host of these tests: loopback and one public address.
func hostAddrs() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("::1")}
}

func TestFilterDest(t *testing.T) {
	public, _ := ParsePolicy(true, nil)
	allow, _ := ParsePolicy(true, []string{"192.0.2.10", "203.0.113.0/24:443", "10.99.0.0/16", "0.0.0.0/0:8443",
		"198.51.100.1:22", "169.254.169.254/32", "allowed.test", "*.wild.test:80"})
	off, _ := ParsePolicy(false, nil)
	for _, tc := range []struct {
		name   string
		p      Policy
		addr   string
		port   uint16
		ok     bool
		reason string // substring of the refusal
	}{
		{"off refuses everything", off, "192.0.2.10", 80, false, "disabled"},
		{"public: public unicast", public, "192.0.2.10", 80, true, ""},
		{"public: host loopback", public, "127.0.0.1", 7070, false, "host loopback"},
		{"public: other loopback", public, "127.0.0.2", 7070, false, "host loopback"},
		{"public: an address of the host", public, "198.51.100.1", 80, false, "address of the host"},
		{"public: RFC 1918 10/8", public, "10.99.0.10", 80, false, "RFC 1918"},
		{"public: RFC 1918 172.16/12", public, "172.20.0.1", 80, false, "RFC 1918"},
		{"public: RFC 1918 192.168/16", public, "192.168.127.1", 80, false, "RFC 1918"},
		{"public: metadata", public, "169.254.169.254", 80, false, "metadata"},
		{"public: CGNAT", public, "100.64.0.1", 80, false, "carrier-grade NAT"},
		{"public: multicast", public, "224.0.0.251", 5353, false, "multicast"},
		{"public: broadcast", public, "255.255.255.255", 67, false, "broadcast"},
		{"public: this network", public, "0.0.0.0", 80, false, "reserved"},
		{"public: class E", public, "240.0.0.1", 80, false, "reserved"},
		{"public: v6 loopback", public, "::1", 80, false, "host loopback"},
		{"public: v6 link-local", public, "fe80::1", 80, false, "link-local"},
		{"public: ULA", public, "fd00::1", 80, false, "unique local"},
		{"public: v4-mapped loopback", public, "::ffff:127.0.0.1", 80, false, "host loopback"},
		{"public: v6 global", public, "2001:db8::1", 443, true, ""},
		{"allow: listed IP, any port", allow, "192.0.2.10", 1234, true, ""},
		{"allow: unlisted public IP", allow, "192.0.2.11", 80, false, "not in the allow list"},
		{"allow: CIDR with its port", allow, "203.0.113.9", 443, true, ""},
		{"allow: CIDR, other port", allow, "203.0.113.9", 80, false, "not in the allow list"},
		{"allow: explicit private CIDR", allow, "10.99.3.4", 5432, true, ""},
		{"allow: private outside the CIDR", allow, "10.98.0.1", 80, false, "RFC 1918"},
		{"allow: 0/0 names nothing special", allow, "127.0.0.1", 8443, false, "host loopback"},
		{"allow: 0/0 allows public on its port", allow, "198.51.100.77", 8443, true, ""},
		{"allow: host address named exactly", allow, "198.51.100.1", 22, true, ""},
		{"allow: host address, other port", allow, "198.51.100.1", 80, false, "address of the host"},
		{"allow: metadata named exactly", allow, "169.254.169.254", 80, true, ""},
		{"allow: other link-local", allow, "169.254.1.1", 80, false, "link-local"},
		{"allow: name not resolved yet", allow, "192.0.2.50", 80, false, "not in the allow list"},
	} {
		f := NewFilter(tc.p, hostAddrs)
		ok, reason := f.Dest(netip.MustParseAddr(tc.addr), tc.port)
		if ok != tc.ok || (!ok && !strings.Contains(reason, tc.reason)) {
			t.Errorf("%s: Dest(%s:%d) = %v %q; want %v %q", tc.name, tc.addr, tc.port, ok, reason, tc.ok, tc.reason)
		}
	}
}

func TestFilterNames(t *testing.T) {
	p, _ := ParsePolicy(true, []string{"allowed.test", "*.wild.test:80", "10.99.0.0/16"})
	f := NewFilter(p, hostAddrs)
	now := time.Unix(1_000_000, 0)
	f.now = func() time.Time { return now }
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"allowed.test", true},
		{"sub.allowed.test", false},
		{"a.wild.test", true},
		{"b.a.wild.test", true},
		{"wild.test", false},
		{"other.test", false},
	} {
		if got := f.Name(tc.name); got != tc.ok {
			t.Errorf("Name(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
	// Answers: a public address is granted to the names' entries, with their ports.
	a := netip.MustParseAddr("192.0.2.10")
	if ok, r := f.Answer("allowed.test", a, time.Second); !ok {
		t.Fatalf("public answer refused: %s", r)
	}
	if ok, _ := f.Dest(a, 443); !ok {
		t.Error("address of an allowed name refused")
	}
	w := netip.MustParseAddr("192.0.2.20")
	f.Answer("x.wild.test", w, 0)
	if ok, _ := f.Dest(w, 80); !ok {
		t.Error("wildcard name's address refused on its port")
	}
	if ok, r := f.Dest(w, 443); ok || !strings.Contains(r, "port 443") {
		t.Errorf("wildcard name's address on another port = %v %q", ok, r)
	}
	// Rebinding: a name never unlocks loopback, the host or private
	// space, unless a CIDR entry names that space.
	for _, bad := range []string{"127.0.0.1", "198.51.100.1", "169.254.169.254", "192.168.1.1", "100.64.1.1"} {
		if ok, r := f.Answer("allowed.test", netip.MustParseAddr(bad), time.Hour); ok || !strings.Contains(r, "rebinding") {
			t.Errorf("Answer(allowed.test → %s) = %v %q, want a rebinding refusal", bad, ok, r)
		}
		if ok, _ := f.Dest(netip.MustParseAddr(bad), 80); ok {
			t.Errorf("Dest(%s) allowed after a refused answer", bad)
		}
	}
	if ok, _ := f.Answer("allowed.test", netip.MustParseAddr("10.99.0.10"), 0); !ok {
		t.Error("answer inside an explicit private CIDR refused")
	}
	// Grants expire.
	now = now.Add(minGrantTTL + time.Second)
	if ok, _ := f.Dest(a, 443); ok {
		t.Error("grant outlived its TTL")
	}
	// Public mode: every name resolves, special answers are still refused.
	pub := NewFilter(Policy{Enabled: true}, hostAddrs)
	if !pub.Name("anything.example") {
		t.Error("public mode refused a name")
	}
	if ok, _ := pub.Answer("evil.example", netip.MustParseAddr("10.0.0.1"), 0); ok {
		t.Error("public mode passed a rebinding answer")
	}
}

func TestFilterGrantsBounded(t *testing.T) {
	p, _ := ParsePolicy(true, []string{"*.many.test"})
	f := NewFilter(p, hostAddrs)
	for i := 0; i < maxGrants+100; i++ {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		f.Answer("x.many.test", a, time.Hour)
	}
	if n := len(f.grants); n > maxGrants {
		t.Errorf("%d grants kept, cap %d", n, maxGrants)
	}
}
