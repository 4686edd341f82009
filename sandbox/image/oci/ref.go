package oci

// References, local names, the --allow-image patterns and the rule that
// plain HTTP goes to loopback registries only.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// canonicalRef is a parsed reference with its canonical spelling:
// docker.io/library/python:3.12, ghcr.io/org/tool@sha256:...
type canonicalRef struct {
	ref name.Reference
}

// ParseRef parses an image reference the way docker does (a bare name is
// on Docker Hub, a missing tag is latest).
func ParseRef(s string) (canonicalRef, error) {
	if s == "" || len(s) > 512 || strings.ContainsAny(s, " \t\r\n\x00") {
		return canonicalRef{}, fmt.Errorf("%q is not an image reference", s)
	}
	r, err := name.ParseReference(s)
	if err != nil {
		return canonicalRef{}, fmt.Errorf("%q is not an image reference: %v", s, err)
	}
	return canonicalRef{ref: r}, nil
}

func (c canonicalRef) registry() string {
	r := c.ref.Context().RegistryStr()
	if r == name.DefaultRegistry {
		return "docker.io"
	}
	return r
}

// repository is REGISTRY/REPO.
func (c canonicalRef) repository() string {
	return c.registry() + "/" + c.ref.Context().RepositoryStr()
}

// String is the canonical reference.
func (c canonicalRef) String() string {
	if d, ok := c.ref.(name.Digest); ok {
		return c.repository() + "@" + d.DigestStr()
	}
	return c.repository() + ":" + c.ref.Identifier()
}

// byDigest says the reference names an immutable digest.
func (c canonicalRef) byDigest() bool {
	_, ok := c.ref.(name.Digest)
	return ok
}

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// LocalName is the image name a reference gets when none is given:
// python-3.12 for docker.io/library/python:3.12, ghcr.io-org-tool-1.4 for
// ghcr.io/org/tool:1.4; digests are shortened. A name longer than 63
// characters is cut and given a hash of the reference.
func LocalName(c canonicalRef) string {
	repo := c.ref.Context().RepositoryStr()
	if c.registry() == "docker.io" {
		repo = strings.TrimPrefix(repo, "library/")
	} else {
		repo = c.registry() + "/" + repo
	}
	id := c.ref.Identifier()
	if d, ok := c.ref.(name.Digest); ok {
		id = strings.Replace(d.DigestStr(), ":", "-", 1)
		if len(id) > 19 {
			id = id[:19]
		}
	}
	n := strings.Trim(unsafeNameChars.ReplaceAllString(repo+"-"+id, "-"), "-._")
	if len(n) > 63 || n == "" {
		sum := sha256.Sum256([]byte(c.String()))
		n = strings.Trim(n[:min(len(n), 54)], "-._") + "-" + hex.EncodeToString(sum[:4])
	}
	return n
}

// allowed reports whether ref matches one of the patterns (no patterns:
// everything). A pattern matches the canonical reference or its
// repository; '*' matches any run of characters, '/' included.
func allowed(patterns []string, c canonicalRef) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if globMatch(p, c.String()) || globMatch(p, c.repository()) {
			return true
		}
	}
	return false
}

// CheckPattern reports whether p is a usable --allow-image pattern.
func CheckPattern(p string) error {
	if p == "" || strings.ContainsAny(p, " \t\r\n\x00") {
		return fmt.Errorf("%q is not a reference pattern", p)
	}
	return nil
}

// globMatch matches the reference s against p. The registry host (before
// the first '/') is matched on its own, '*' there being a run of
// characters without '.' (one label, or a port): a host pattern never
// matches a longer host (*.corp.example is not evil.com/x.corp.example,
// registry.corp.example* not registry.corp.example.evil.com). In the rest
// '*' is any run of characters ('/' included: ghcr.io/org/* takes
// ghcr.io/org/sub/tool) and '?' one character.
func globMatch(p, s string) bool {
	ph, pp, pslash := strings.Cut(p, "/")
	sh, sp, sslash := strings.Cut(s, "/")
	return pslash == sslash && globRE(ph, "[^./]*", "[^./]").MatchString(sh) && globRE(pp, ".*", ".").MatchString(sp)
}

// globRE is p as an anchored regular expression, star and one standing
// for '*' and '?'.
func globRE(p, star, one string) *regexp.Regexp {
	var re strings.Builder
	re.WriteString("^")
	for _, r := range p {
		switch r {
		case '*':
			re.WriteString(star)
		case '?':
			re.WriteString(one)
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String())
}

// errPlainHTTP refuses an unencrypted request to a registry off loopback.
var errPlainHTTP = errors.New("plain HTTP is only used for registries on loopback")

// loopbackHTTPOnly refuses http:// requests to hosts other than loopback
// (go-containerregistry would otherwise speak plain HTTP to private and
// .local addresses too).
type loopbackHTTPOnly struct{ next http.RoundTripper }

func (l loopbackHTTPOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !isLoopback(req.URL.Hostname()) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), errPlainHTTP)
	}
	return l.next.RoundTrip(req)
}

// errLocalRegistry refuses a registry on the server's own host to tenants.
var errLocalRegistry = errors.New("registries on the server's own host are not for tenants")

// localAllowed is the set of ip:port a local dial may reach: hosts named
// literally (no wildcard), localhost as both loopback addresses, a host
// without a port on both 443 and 80 (a loopback registry or proxy may
// speak plain HTTP).
func localAllowed(hosts []string) map[string]bool {
	ok := map[string]bool{}
	for _, host := range hosts {
		if strings.ContainsAny(host, "*?") {
			continue
		}
		ports := []string{"443", "80"}
		h, port, err := net.SplitHostPort(host)
		if err == nil {
			ports = []string{port}
		} else {
			h = strings.Trim(host, "[]")
		}
		ips := []string{h}
		if h == "localhost" {
			ips = []string{"127.0.0.1", "::1"}
		}
		for _, ip := range ips {
			for _, port := range ports {
				ok[net.JoinHostPort(ip, port)] = true
			}
		}
	}
	return ok
}

// noLocalRegistries is go-containerregistry's default transport with a
// dialer that refuses loopback, link-local and unspecified addresses
// (after DNS, so a name that resolves there is refused too), except the
// host:port of an allow pattern that names one without wildcards.
func noLocalRegistries(allow []string) http.RoundTripper {
	var hosts []string
	for _, p := range allow {
		host, _, _ := strings.Cut(p, "/")
		hosts = append(hosts, host)
	}
	// A proxy of the environment may be a local one: connecting to it is
	// not connecting to a registry there.
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		if u, err := url.Parse(os.Getenv(v)); err == nil && u.Host != "" {
			hosts = append(hosts, u.Host)
		}
	}
	ok := localAllowed(hosts)
	base := remote.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip := net.ParseIP(host)
		if ip == nil || ok[address] || !(ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()) {
			return nil
		}
		return fmt.Errorf("%s: %w", address, errLocalRegistry)
	}}
	base.DialContext = d.DialContext
	return base
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
