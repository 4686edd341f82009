package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
)

// ent is one tar entry of a test layer.
type ent struct {
	name     string
	typ      byte
	body     string
	mode     int64
	link     string
	uid, gid int
}

func dir(n string) ent        { return ent{name: n, typ: tar.TypeDir, mode: 0o755} }
func file(n, body string) ent { return ent{name: n, typ: tar.TypeReg, body: body, mode: 0o644} }
func symlink(n, target string) ent {
	return ent{name: n, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(n, target string) ent {
	return ent{name: n, typ: tar.TypeLink, link: target, mode: 0o644}
}

// tarOf returns the tar stream of es.
func tarOf(t testing.TB, es ...ent) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Uid: e.uid, Gid: e.gid,
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 8, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// layerOf is a gzip layer of es.
func layerOf(t testing.TB, es ...ent) v1.Layer {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(tarOf(t, es...))
	zw.Close()
	return static.NewLayer(z.Bytes(), types.OCILayer)
}

// imageOf builds an image for this host's architecture.
func imageOf(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	return imageFor(t, runtime.GOARCH, cfg, layers...)
}

func imageFor(t testing.TB, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry is go-containerregistry's registry on loopback, with a
// hook in front of it and a count of blob downloads per digest.
type testRegistry struct {
	host string
	srv  *httptest.Server

	mu    sync.Mutex
	gets  map[string]int
	front func(w http.ResponseWriter, r *http.Request) bool // true: handled
}

func startRegistry(t testing.TB) *testRegistry {
	t.Helper()
	return startRegistryOn(t, "127.0.0.1:0", registryHandler())
}

func registryHandler() http.Handler { return registry.New(registry.Logger(log.New(io.Discard, "", 0))) }

func startRegistryOn(t testing.TB, addr string, h http.Handler) *testRegistry {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &testRegistry{host: l.Addr().String(), gets: map[string]int{}}
	r.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if i := strings.Index(req.URL.Path, "/blobs/sha256:"); i >= 0 && req.Method == http.MethodGet {
			r.mu.Lock()
			r.gets[req.URL.Path[i+len("/blobs/"):]]++
			r.mu.Unlock()
		}
		r.mu.Lock()
		front := r.front
		r.mu.Unlock()
		if front != nil && front(w, req) {
			return
		}
		h.ServeHTTP(w, req)
	})}}
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *testRegistry) setFront(f func(w http.ResponseWriter, req *http.Request) bool) {
	r.mu.Lock()
	r.front = f
	r.mu.Unlock()
}

func (r *testRegistry) blobGets(d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[d.String()]
}

// push writes img (or an index) to repo:tag on r and returns the reference.
func (r *testRegistry) push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref := r.host + "/" + repoTag
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func (r *testRegistry) pushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref := r.host + "/" + repoTag
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	return ref
}

// fakeAgent is a stand-in guest agent file for tests that do not boot.
func fakeAgent(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boxlite-guest")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// newStore is a Store on a fresh home (root needed: unpacking sets owners).
func newStore(t testing.TB, mod func(*Config)) (*Store, string) {
	t.Helper()
	testenv.RequireRoot(t)
	home := t.TempDir()
	cfg := Config{Home: home, Agent: fakeAgent(t), AgentVersion: "test", BootImage: filepath.Join(home, "no-boot"),
		Logger: slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, home
}

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// leftovers lists what a failed pull must not leave: image directories,
// temporary directories and blob files.
func leftovers(t testing.TB, home string) []string {
	t.Helper()
	var out []string
	for _, g := range []string{"images/[^.]*", "images/.pull-*", "images/.import-*", "layers/sha256/[0-9a-f]*", "layers/sha256/.tmp-*"} {
		ms, _ := filepath.Glob(filepath.Join(home, g))
		for _, m := range ms {
			if fi, err := os.Stat(m); err == nil && (fi.IsDir() || strings.Contains(g, "layers")) && !strings.HasSuffix(m, ".lock") {
				out = append(out, strings.TrimPrefix(m, home+"/"))
			}
		}
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
