package oci

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// baseLayers are a small two-layer image with whiteouts, an opaque
// directory, links and a passwd file.
func baseLayers(t testing.TB) []v1.Layer {
	suid := file("usr/bin/su", "su")
	suid.mode = 0o4755
	return []v1.Layer{
		layerOf(t, dir("etc"), file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
			file("etc/group", "root:x:0:\nstaff:x:50:\n"), dir("home"), dir("home/app"),
			dir("usr"), dir("usr/bin"), suid, hardlink("usr/bin/su2", "usr/bin/su"), symlink("bin", "usr/bin"),
			dir("opt"), file("opt/gone", "g"), dir("cfg"), file("cfg/old", "o")),
		layerOf(t, file("opt/.wh.gone", ""), file("cfg/.wh..wh..opq", ""), file("cfg/new", "n"), file("bin/tool", "t")),
	}
}

func TestPullMultiLayer(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	ref := reg.push(t, "app:1", imageOf(t, v1.Config{Env: []string{"FOO=bar", "PATH=/usr/bin:/bin", "bad key=x"}, WorkingDir: "/srv/app",
		User: "app:staff", Entrypoint: []string{"/ignored"}}, baseLayers(t)...))
	var phases []string
	m, name, err := s.Pull(ctxT(t), ref, PullOptions{Progress: func(p sandbox.ImageProgress) { phases = append(phases, p.Message) }})
	if err != nil {
		t.Fatal(err)
	}
	if name != LocalName(mustRef(t, ref)) {
		t.Errorf("name %q", name)
	}
	img, err := image.Locate(home, name)
	if err != nil {
		t.Fatal(err)
	}
	root := img.RootfsDir()
	missing(t, filepath.Join(root, "opt/gone"))
	missing(t, filepath.Join(root, "cfg/old"))
	read(t, filepath.Join(root, "cfg/new"))
	read(t, filepath.Join(root, "usr/bin/tool"))
	if st := lstat(t, filepath.Join(root, "usr/bin/su")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("setuid lost: %o", st.Mode&0o7777)
	}
	if lstat(t, filepath.Join(root, "usr/bin/su2")).Ino != lstat(t, filepath.Join(root, "usr/bin/su")).Ino {
		t.Error("hard link broken")
	}
	if a := lstat(t, filepath.Join(root, image.AgentPath)); a.Uid != 0 || a.Mode&0o7777 != 0o755 {
		t.Errorf("agent %d %o", a.Uid, a.Mode&0o7777)
	}
	if r := lstat(t, root); r.Uid != 0 || r.Mode&0o777 != 0o755 {
		t.Errorf("rootfs %d %o", r.Uid, r.Mode&0o777)
	}
	if fi, err := os.Stat(filepath.Join(root, "srv/app")); err != nil || !fi.IsDir() {
		t.Errorf("working directory not made: %v", err)
	}
	if _, err := os.Stat(img.Ext4Path()); err != nil {
		t.Error(err)
	}
	if m.Cwd != "/srv/app" || *m.UID != 1000 || *m.GID != 50 || strings.Join(m.Env, " ") != "FOO=bar PATH=/usr/bin:/bin HOME=/home/app" {
		t.Errorf("config: cwd %q uid %v gid %v env %q", m.Cwd, *m.UID, *m.GID, m.Env)
	}
	if len(m.Layers) != 2 || m.Source != "registry" || !strings.HasPrefix(m.Digest, "sha256:") {
		t.Errorf("meta %+v", m)
	}
	if !strings.Contains(strings.Join(phases, "|"), "unpacking layer 2/2") {
		t.Errorf("progress: %q", phases)
	}
	// Pulling again finds the same digest: nothing is reinstalled.
	m2, _, err := s.Pull(ctxT(t), ref, PullOptions{})
	if err != nil || !m2.Pulled.Equal(m.Pulled) {
		t.Errorf("second pull reinstalled or failed: %v", err)
	}
	// Resolve gives the box its config.
	ri, err := s.Resolve(ctxT(t), ref, nil)
	if err != nil || ri.Name != name || ri.WorkDir != "/srv/app" || *ri.UID != 1000 {
		t.Errorf("resolve: %+v %v", ri, err)
	}
}

func mustRef(t testing.TB, s string) canonicalRef {
	c, err := ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPullIndex picks this host's variant from a multi-arch index and
// refuses an index without one.
func TestPullIndex(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	mine := imageOf(t, v1.Config{}, layerOf(t, file("arch", runtime.GOARCH)))
	theirs := imageFor(t, other, v1.Config{}, layerOf(t, file("arch", other)))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}})
	ref := reg.pushIndex(t, "multi:1", idx)
	_, name, err := s.Pull(ctxT(t), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(image.Dir(home, name), "rootfs", "arch")); got != runtime.GOARCH {
		t.Errorf("picked %q", got)
	}
	only := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}})
	ref2 := reg.pushIndex(t, "foreign:1", only)
	_, _, err = s.Pull(ctxT(t), ref2, PullOptions{})
	if !errors.Is(err, sandbox.ErrFailedPrecondition) || !strings.Contains(sandbox.PublicMessage(err), "linux/"+other) {
		t.Errorf("foreign index: %v", err)
	}
	if _, err := os.Stat(image.Dir(home, LocalName(mustRef(t, ref2)))); err == nil {
		t.Error("a refused pull left an image")
	}
}

// TestPullBasicAuth: credentials come from a docker config file.
func TestPullBasicAuth(t *testing.T) {
	s, _ := newStore(t, nil)
	reg := startRegistry(t)
	ref := reg.push(t, "private:1", imageOf(t, v1.Config{}, layerOf(t, file("secret", "s"))))
	reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); ok && u == "alice" && p == "s3cret" {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`, http.StatusUnauthorized)
		return true
	})
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)
	if _, _, err := s.Pull(ctxT(t), ref, PullOptions{}); !errors.Is(err, sandbox.ErrFailedPrecondition) || !strings.Contains(sandbox.PublicMessage(err), "docker login") {
		t.Fatalf("without credentials: %v", err)
	}
	conf, _ := json.Marshal(map[string]any{"auths": map[string]any{reg.host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}}})
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Pull(ctxT(t), ref, PullOptions{}); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
}

// TestPullCorruptBlob: a layer whose bytes do not match its digest is
// refused and leaves nothing behind.
func TestPullCorruptBlob(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	l := layerOf(t, file("f", strings.Repeat("data", 1000)))
	d, _ := l.Digest()
	ref := reg.push(t, "corrupt:1", imageOf(t, v1.Config{}, l))
	reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, d.String()) || r.Method != http.MethodGet {
			return false
		}
		rc, _ := l.Compressed()
		b := make([]byte, 1<<20)
		n, _ := rc.Read(b)
		b[n/2] ^= 0xff
		w.Write(b[:n])
		return true
	})
	_, _, err := s.Pull(ctxT(t), ref, PullOptions{})
	if !errors.Is(err, ErrDigest) || !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("corrupt blob: %v", err)
	}
	if left := leftovers(t, home); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestPullHostileImage: an image whose layer escapes is refused whole,
// the host is untouched and nothing is installed.
func TestPullHostileImage(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	host := t.TempDir()
	ref := reg.push(t, "evil:1", imageOf(t, v1.Config{}, layerOf(t, symlink("x", host), file("x/pwned", "p"))))
	_, _, err := s.Pull(ctxT(t), ref, PullOptions{})
	if !errors.Is(err, sandbox.ErrFailedPrecondition) || !strings.Contains(sandbox.PublicMessage(err), "refused") {
		t.Fatalf("hostile image: %v", err)
	}
	if ents, _ := os.ReadDir(host); len(ents) != 0 {
		t.Errorf("host written: %v", ents)
	}
	for _, l := range leftovers(t, home) {
		if strings.HasPrefix(l, "images/") {
			t.Errorf("left behind: %s", l)
		}
	}
}

// TestPullInterrupted: the registry dies in the middle of a blob; the
// pull fails leaving nothing, and the next pull from the revived registry
// succeeds. A cancelled pull leaves nothing either.
func TestPullInterrupted(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	l := layerOf(t, file("big", strings.Repeat("0123456789abcdef", 64<<10)))
	d, _ := l.Digest()
	img := imageOf(t, v1.Config{}, l)
	ref := reg.push(t, "flaky:1", img)
	started := make(chan struct{})
	var once sync.Once
	reg.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, d.String()) || r.Method != http.MethodGet {
			return false
		}
		rc, _ := l.Compressed()
		b := make([]byte, 4096)
		n, _ := rc.Read(b)
		w.Header().Set("Content-Length", "100000000")
		w.Write(b[:n])
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		<-r.Context().Done() // until the server dies
		return true
	})
	done := make(chan error, 1)
	go func() { _, _, err := s.Pull(ctxT(t), ref, PullOptions{}); done <- err }()
	<-started
	addr := reg.host
	reg.srv.CloseClientConnections()
	reg.srv.Close()
	if err := <-done; err == nil {
		t.Fatal("pull succeeded with the registry gone")
	}
	if left := leftovers(t, home); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	// The registry comes back on the same address.
	reg2 := startRegistryOn(t, addr, registryHandler())
	reg2.push(t, "flaky:1", img)
	if _, _, err := s.Pull(ctxT(t), ref, PullOptions{}); err != nil {
		t.Fatalf("pull after the registry came back: %v", err)
	}

	// Cancelled in the middle of a download.
	l3 := layerOf(t, file("other", "x"))
	d3, _ := l3.Digest()
	ref3 := reg2.push(t, "slow:1", imageOf(t, v1.Config{}, l3))
	reg2.setFront(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, d3.String()) || r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, _, err := s.Pull(ctx, ref3, PullOptions{}); !errors.Is(err, sandbox.ErrDeadlineExceeded) {
		t.Errorf("cancelled pull: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, "layers/sha256", d3.Hex)); err == nil {
		t.Error("a partial blob was cached")
	}
	if ms, _ := filepath.Glob(filepath.Join(home, "images", ".pull-*")); len(ms) != 0 {
		t.Errorf("temporary directories left: %v", ms)
	}
}

// TestPullConcurrent: two pulls of one image download each blob once.
func TestPullConcurrent(t *testing.T) {
	s, home := newStore(t, nil)
	reg := startRegistry(t)
	l := layerOf(t, file("f", strings.Repeat("z", 1<<20)))
	d, _ := l.Digest()
	ref := reg.push(t, "shared:1", imageOf(t, v1.Config{}, l))
	// A second store on the same home stands for a second server.
	s2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = s2
			}
			_, errs[i] = st.Resolve(ctxT(t), ref, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.blobGets(d); n != 1 {
		t.Errorf("layer downloaded %d times", n)
	}
	if ms, _ := filepath.Glob(filepath.Join(home, "images", "[^.]*")); len(ms) != 1 {
		t.Errorf("images: %v", ms)
	}
}

func TestLoopbackOnlyHTTP(t *testing.T) {
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	g := loopbackHTTPOnly{next: next}
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:5000/v2/", true},
		{"http://[::1]:5000/v2/", true},
		{"http://localhost:5000/v2/", true},
		{"https://registry.example/v2/", true},
		{"http://10.1.2.3:5000/v2/", false},
		{"http://192.168.1.2/v2/", false},
		{"http://registry.local/v2/", false},
		{"http://registry.example/token", false},
	} {
		req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
		_, err := g.RoundTrip(req)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, errPlainHTTP)) {
			t.Errorf("%s: %v", tt.url, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
