// Package ocitest builds OCI test images from directories (the default
// image's root file system, mostly) and serves them from
// go-containerregistry's registry on loopback. Tests, benchmarks and the
// e2e helper command (internal/cmd/testregistry) share it.
package ocitest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// AgentPath is left out of directory layers: images never carry the agent.
const AgentPath = "./usr/local/bin/boxlite-guest"

// DirLayer tars dir (GNU tar, numeric owners, without the guest agent)
// into out, gzip-compressed when compress is set, and returns it as a
// layer backed by that file.
func DirLayer(dir, out string, compress bool) (v1.Layer, error) {
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("tar", "--numeric-owner", "--exclude="+AgentPath, "-C", dir, "-cf", "-", ".")
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	diff, blob := sha256.New(), sha256.New()
	var w io.Writer = io.MultiWriter(f, blob)
	var zw *gzip.Writer
	if compress {
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		w = zw
	}
	_, err = io.Copy(io.MultiWriter(w, diff), pipe)
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("tar: %v: %s", werr, stderr.String())
	}
	if zw != nil && err == nil {
		err = zw.Close()
	}
	if err != nil {
		return nil, err
	}
	mt := types.OCIUncompressedLayer
	if compress {
		mt = types.OCILayer
	}
	return &FileLayer{Path: out, Blob: sum(blob), Diff: sum(diff), MT: mt}, nil
}

func sum(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// FileLayer is a layer whose blob is a file.
type FileLayer struct {
	Path       string
	Blob, Diff v1.Hash
	MT         types.MediaType
}

func (l *FileLayer) Digest() (v1.Hash, error)             { return l.Blob, nil }
func (l *FileLayer) DiffID() (v1.Hash, error)             { return l.Diff, nil }
func (l *FileLayer) MediaType() (types.MediaType, error)  { return l.MT, nil }
func (l *FileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.Path) }
func (l *FileLayer) Uncompressed() (io.ReadCloser, error) { return l.uncompressed() }
func (l *FileLayer) Size() (int64, error) {
	fi, err := os.Stat(l.Path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (l *FileLayer) uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.Path)
	if err != nil || l.MT == types.OCIUncompressedLayer {
		return f, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// Whiteouts is a gzip layer removing names (paths relative to the root).
func Whiteouts(names ...string) (v1.Layer, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, n := range names {
		d, b := filepath.Split(n)
		if err := tw.WriteHeader(&tar.Header{Name: d + ".wh." + b, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
	}
	tw.Close()
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(tb.Bytes())
	zw.Close()
	return static.NewLayer(zb.Bytes(), types.OCILayer), nil
}

// Image is an image of layers for this host's architecture with cfg.
func Image(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", runtime.GOARCH, cfg
	return mutate.ConfigFile(img, cf)
}

// PythonConfig is the config of the test image with Python: a user, a
// working directory and a variable a box must see.
var PythonConfig = v1.Config{
	Env:        []string{"GREETING=from-image", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	WorkingDir: "/srv/work",
	User:       "nobody",
	Cmd:        []string{"/bin/false"}, // ignored: boxes run the agent
}

// BoxImages are the two test images built on base (a layer of the default
// image's root file system): "python" with PythonConfig, and "nopython",
// the same without the Python interpreters of rootfs (a whiteout layer).
func BoxImages(base v1.Layer, rootfs string) (python, nopython v1.Image, err error) {
	if python, err = Image(PythonConfig, base); err != nil {
		return nil, nil, err
	}
	ms, _ := filepath.Glob(filepath.Join(rootfs, "usr/bin/python*"))
	var names []string
	for _, m := range ms {
		names = append(names, strings.TrimPrefix(m, strings.TrimSuffix(rootfs, "/")+"/"))
	}
	sort.Strings(names)
	wh, err := Whiteouts(names...)
	if err != nil {
		return nil, nil, err
	}
	nopython, err = Image(v1.Config{}, base, wh)
	return python, nopython, err
}

// Registry is go-containerregistry's registry on a loopback listener.
type Registry struct {
	Addr string
	srv  *http.Server

	mu   sync.Mutex
	seen map[string]bool
	// SlowFirst throttles the first download of each blob bigger than
	// 1 MiB to this many bytes a second (0: off), so a test can kill a
	// pull half-way.
	SlowFirst int64
}

// Serve starts a registry on l.
func Serve(l net.Listener) *Registry {
	r := &Registry{Addr: l.Addr().String(), seen: map[string]bool{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		slow := r.SlowFirst > 0 && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") && !r.seen[req.URL.Path]
		r.seen[req.URL.Path] = true
		rate := r.SlowFirst
		r.mu.Unlock()
		if slow {
			w = &throttled{ResponseWriter: w, rate: rate, start: time.Now()}
		}
		h.ServeHTTP(w, req)
	})}
	go r.srv.Serve(l)
	return r
}

// Close stops the registry at once, dropping connections.
func (r *Registry) Close() error { return r.srv.Close() }

// Push writes img to REPO:TAG on the registry and returns the reference.
func (r *Registry) Push(repoTag string, img v1.Image) (string, error) {
	ref := r.Addr + "/" + repoTag
	tag, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	return ref, remote.Write(tag, img)
}

// throttled writes at most rate bytes a second after the first MiB.
type throttled struct {
	http.ResponseWriter
	rate  int64
	start time.Time
	n     int64
}

func (t *throttled) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 64<<10)]
		n, err := t.ResponseWriter.Write(chunk)
		written += n
		t.n += int64(n)
		if err != nil {
			return written, err
		}
		p = p[n:]
		if t.n > 1<<20 {
			if f, ok := t.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
			if ahead := time.Duration(float64(t.n)/float64(t.rate)*float64(time.Second)) - time.Since(t.start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	return written, nil
}
