package oci

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// A hostile registry's manifest that declares a huge config or huge
// layers is refused before a byte of them is fetched: the config is read
// into memory whole and a layer goes to disk whole, up to what the
// manifest declares (an endless stream ran the server out of memory, or
// filled the disk, before anything said no).
func TestPullDeclaredSizesBounded(t *testing.T) {
	s, _ := newStore(t, func(c *Config) { c.MaxUnpackedBytes = 1 << 20 })
	reg := startRegistry(t)
	base := imageOf(t, v1.Config{}, layerOf(t, file("f", "x")))
	reg.push(t, "base:1", base)
	fake := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	for _, tc := range []struct {
		name string
		edit func(m *v1.Manifest)
		want error
	}{
		{"config", func(m *v1.Manifest) { m.Config.Size, m.Config.Digest = 1<<40, fake }, errNotImage},
		{"layer", func(m *v1.Manifest) { m.Layers[0].Size, m.Layers[0].Digest = 1<<40, fake }, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := base.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			m = m.DeepCopy()
			tc.edit(m)
			raw, _ := json.Marshal(m)
			var served atomic.Int64
			reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
				switch {
				case strings.HasSuffix(r.URL.Path, "/huge/manifests/1"):
					w.Header().Set("Content-Type", string(m.MediaType))
					w.Write(raw)
				case strings.HasSuffix(r.URL.Path, "/blobs/"+fake.String()):
					chunk := make([]byte, 64<<10)
					for served.Load() < 64<<20 { // an endless stream, for the test's sake cut at 64 MiB
						if _, err := w.Write(chunk); err != nil {
							break
						}
						served.Add(int64(len(chunk)))
					}
				default:
					return false
				}
				return true
			})
			defer reg.setFront(nil)
			_, _, err = s.Pull(ctxT(t), reg.host+"/huge:1", PullOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("pull: %v, want %v", err, tc.want)
			}
			if n := served.Load(); n > 0 {
				t.Fatalf("%d bytes of the declared-huge blob were fetched", n)
			}
		})
	}
}

// An image whose run settings (what every box of it carries, and every
// image lookup reads) are absurd is refused.
func TestPullRunSettingsBounded(t *testing.T) {
	s, _ := newStore(t, nil)
	reg := startRegistry(t)
	ref := reg.push(t, "env:1", imageOf(t, v1.Config{Env: []string{"A=" + strings.Repeat("x", 300<<10)}}, layerOf(t, file("f", "x"))))
	if _, _, err := s.Pull(ctxT(t), ref, PullOptions{}); !errors.Is(err, errNotImage) || !strings.Contains(err.Error(), "run settings") {
		t.Fatalf("pull: %v", err)
	}
}

// A pull clears the leftovers of its own image's interrupted pulls, never
// the working directory of another image whose name begins with its name
// (pulling x:a removed the directory x:a-b was unpacking into).
func TestPullLeavesLongerNamesPullsAlone(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	ref := reg.push(t, "x:a", imageOf(t, v1.Config{}, layerOf(t, file("f", "x"))))
	name := LocalName(mustRef(t, ref))
	images := filepath.Join(home, "images")
	os.MkdirAll(images, 0o711)
	mine := filepath.Join(images, ".pull-"+name+"-0123abcd")
	other := filepath.Join(images, ".pull-"+name+"-b-0123abcd") // x:a-b's, running
	for _, d := range []string{mine, other} {
		if err := os.Mkdir(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Pull(ctxT(t), ref, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("another image's pull directory was removed: %v", err)
	}
	if _, err := os.Stat(mine); !os.IsNotExist(err) {
		t.Fatalf("the image's own leftover remains: %v", err)
	}
}

// An image of many small files gets the inodes it needs in its ext4 (the
// default, one per 16 KiB, ran out after the unpack for images of more
// than 262144 entries at the smallest size); ordinary images keep the
// default. (A real image of that many files takes minutes to build, too
// slow for every run; mke2fs honouring -N is its own business.)
func TestExt4Inodes(t *testing.T) {
	for _, tt := range []struct {
		size    int64
		entries int
		atLeast int64
	}{
		{4 << 30, 1000, 262144},
		{4 << 30, 300_000, 600_000},
		{64 << 30, 10, 4 << 20},
	} {
		if got := ext4Inodes(tt.size, tt.entries); got < tt.atLeast || got < int64(tt.entries) {
			t.Errorf("ext4Inodes(%d, %d) = %d, want at least %d", tt.size, tt.entries, got, tt.atLeast)
		}
	}
	if got := ext4Inodes(4<<30, 1000); got != (4<<30)/(16<<10) {
		t.Errorf("an ordinary image's inodes changed: %d", got)
	}
}

// A failure of the server's own disk is not reported as the registry
// being out of reach (every errno is a net.Error).
func TestDiskErrorsAreNotNetworkErrors(t *testing.T) {
	disk := registryError(&os.PathError{Op: "open", Path: "/x", Err: syscall.EIO}, "img")
	if strings.Contains(sandbox.PublicMessage(disk), "reach the registry") {
		t.Errorf("EIO: %v", sandbox.PublicMessage(disk))
	}
	netErr := registryError(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, "img")
	if !strings.Contains(sandbox.PublicMessage(netErr), "reach the registry") {
		t.Errorf("ECONNREFUSED: %v", sandbox.PublicMessage(netErr))
	}
}

// A registry that trickles a layer is abandoned at the stall window: the
// fetch holds the layer's lock, which every other pull of an image with
// that layer (another tenant's too) waits for, so one slow registry held
// them all for as long as it liked. Another pull of the layer then works.
func TestPullStalledRegistryIsAbandoned(t *testing.T) {
	s, _ := newStore(t, nil)
	s.cache.stall = 2 * time.Second
	reg := startRegistry(t)
	shared := layerOf(t, file("big", strings.Repeat("z", 1<<20)))
	d, _ := shared.Digest()
	victim := reg.push(t, "victim:1", imageOf(t, v1.Config{}, shared))
	evil := reg.push(t, "evil:1", imageOf(t, v1.Config{Env: []string{"E=1"}}, shared))
	rc, _ := shared.Compressed()
	body, _ := io.ReadAll(rc)
	reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/evil/blobs/"+d.String()) || r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for i := 0; i < len(body) && r.Context().Err() == nil; i++ { // a byte every 100 ms
			w.Write(body[i : i+1])
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		return true
	})
	_, _, err := s.Pull(ctxT(t), evil, PullOptions{})
	if !errors.Is(err, errStalled) {
		t.Fatalf("the trickled pull: %v", err)
	}
	if _, _, err := s.Pull(ctxT(t), victim, PullOptions{}); err != nil {
		t.Fatalf("the pull after it: %v", err)
	}
}

// On a server with tenants, an image reference cannot make the server
// connect to its own host (a registry on loopback, by address or by a name
// that resolves there): tenants could probe the server's ports with it.
// An allow pattern naming the registry literally lets it through.
func TestTenantsCannotPullFromLocalRegistries(t *testing.T) {
	reg := startRegistry(t)
	ref := reg.push(t, "local:1", imageOf(t, v1.Config{}, layerOf(t, file("f", "x"))))
	var reached atomic.Int32
	reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		reached.Add(1)
		return false
	})
	s, _ := newStore(t, func(c *Config) { c.Tenants = true })
	_, port, _ := net.SplitHostPort(reg.host)
	for _, r := range []string{ref, "localhost:" + port + "/local:1"} {
		if _, err := s.Resolve(ctxT(t), r, nil); !errors.Is(err, errLocalRegistry) || !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Fatalf("%s: %v", r, err)
		}
	}
	if n := reached.Load(); n > 0 {
		t.Fatalf("the local registry got %d requests", n)
	}
	allowed, _ := newStore(t, func(c *Config) { c.Tenants = true; c.Allow = []string{reg.host + "/*"} })
	if _, err := allowed.Resolve(ctxT(t), ref, nil); err != nil {
		t.Fatalf("a literally allowed local registry: %v", err)
	}
}

// A layer that names URLs to fetch it from is refused: the registry
// client would fetch them, from any host the image names.
func TestPullForeignURLsRefused(t *testing.T) {
	s, _ := newStore(t, nil)
	reg := startRegistry(t)
	base := imageOf(t, v1.Config{}, layerOf(t, file("f", "x")))
	reg.push(t, "base:1", base)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var dialled atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	m, _ := base.Manifest()
	m = m.DeepCopy()
	m.Layers[0].URLs = []string{"http://" + l.Addr().String() + "/layer"}
	m.Layers[0].Digest = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)} // not in the registry
	raw, _ := json.Marshal(m)
	reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/foreign/manifests/1") {
			return false
		}
		w.Header().Set("Content-Type", string(m.MediaType))
		w.Write(raw)
		return true
	})
	if _, _, err := s.Pull(ctxT(t), reg.host+"/foreign:1", PullOptions{}); !errors.Is(err, errNotImage) {
		t.Fatalf("pull: %v", err)
	}
	if n := dialled.Load(); n > 0 {
		t.Fatalf("the layer's URL was dialled %d times", n)
	}
}

// The addresses a tenants' server may still dial locally: what a pattern
// or proxy names literally, a host without a port on 443 and 80 (a local
// proxy or registry speaks plain HTTP on 80; only 443 was allowed), never
// a wildcard host.
func TestLocalAllowed(t *testing.T) {
	got := localAllowed([]string{"localhost", "127.0.0.1:5000", "*:7070", "[::1]"})
	for _, want := range []string{"127.0.0.1:80", "127.0.0.1:443", "[::1]:80", "127.0.0.1:5000", "[::1]:443"} {
		if !got[want] {
			t.Errorf("%s not allowed: %v", want, got)
		}
	}
	for _, not := range []string{"127.0.0.1:7070", "127.0.0.1:5001"} {
		if got[not] {
			t.Errorf("%s allowed", not)
		}
	}
}
