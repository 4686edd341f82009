package oci

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// TestImport installs a docker save tarball, an OCI layout directory and
// an OCI layout tarball.
func TestImport(t *testing.T) {
	s, home := newStore(t, nil)
	img := imageOf(t, v1.Config{Env: []string{"X=1"}}, baseLayers(t)...)
	dir := t.TempDir()

	save := filepath.Join(dir, "save.tar")
	tag, _ := name.NewTag("example.test/app:1")
	if err := tarball.WriteToFile(save, tag, img); err != nil {
		t.Fatal(err)
	}
	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	layTar := filepath.Join(dir, "layout.tar")
	tarDir(t, lay, layTar)

	for _, tt := range []struct{ name, path string }{{"saved", save}, {"laydir", lay}, {"laytar", layTar}} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := s.Import(ctxT(t), tt.path, PullOptions{Name: tt.name})
			if err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(image.Dir(home, tt.name), "rootfs")
			read(t, filepath.Join(root, "cfg/new"))
			missing(t, filepath.Join(root, "opt/gone"))
			if m.Source != "import" || len(m.Layers) != 2 || strings.Join(m.Env, ",") != "X=1" {
				t.Errorf("meta %+v", m)
			}
		})
	}
	if _, err := s.Import(ctxT(t), filepath.Join(dir, "nothing"), PullOptions{Name: "x"}); err == nil {
		t.Error("import of a missing file succeeded")
	}
	junk := filepath.Join(dir, "junk.tar")
	os.WriteFile(junk, []byte("not a tar"), 0o644)
	if _, err := s.Import(ctxT(t), junk, PullOptions{Name: "junk"}); !errors.Is(err, sandbox.ErrFailedPrecondition) {
		t.Errorf("junk import: %v", err)
	}
	if _, err := os.Stat(image.Dir(home, "junk")); err == nil {
		t.Error("a failed import left an image")
	}
}

// tarDir writes the tree dir as a tar file.
func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = rel
		tw.WriteHeader(h)
		if fi.Mode().IsRegular() {
			in, _ := os.Open(p)
			io.Copy(tw, in)
			in.Close()
		}
		return nil
	})
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveAndPrune: an image in use is kept; layers shared with another
// image survive a prune, the removed image's own layers go.
func TestRemoveAndPrune(t *testing.T) {
	used := map[string]int{}
	s, home := newStore(t, func(c *Config) {
		c.InUse = func(_ context.Context, n string) (int, error) { return used[n], nil }
	})
	reg := startRegistry(t)
	base := layerOf(t, file("base", "b"))
	a, b := layerOf(t, file("a", "a")), layerOf(t, file("b", "b"))
	refA := reg.push(t, "a:1", imageOf(t, v1.Config{}, base, a))
	refB := reg.push(t, "b:1", imageOf(t, v1.Config{}, base, b))
	_, nameA, err := s.Pull(ctxT(t), refA, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Pull(ctxT(t), refB, PullOptions{Name: "bee"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctxT(t))
	if err != nil || len(list) != 2 || list[0].Name != nameA || list[1].Name != "bee" || list[1].Reference != mustRef(t, refB).String() {
		t.Fatalf("list %+v %v", list, err)
	}
	used[nameA] = 1
	if err := s.Remove(ctxT(t), nameA); !errors.Is(err, sandbox.ErrFailedPrecondition) {
		t.Fatalf("removed an image in use: %v", err)
	}
	used[nameA] = 0
	if err := s.Remove(ctxT(t), nameA); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctxT(t), nameA); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	rep, err := s.Prune(ctxT(t))
	if err != nil || rep.Layers != 1 {
		t.Fatalf("prune %+v %v", rep, err)
	}
	for l, want := range map[v1.Layer]bool{base: true, a: false, b: true} {
		d, _ := l.Digest()
		if _, err := os.Stat(filepath.Join(home, "layers/sha256", d.Hex)); (err == nil) != want {
			t.Errorf("layer %s kept=%v, want %v", d, err == nil, want)
		}
	}
}

// TestResolvePolicy: pull policies, allow patterns, local names, and a
// moved tag while a box uses the old image.
func TestResolvePolicy(t *testing.T) {
	used := map[string]int{}
	reg := startRegistry(t)
	ref := reg.push(t, "team/tool:1", imageOf(t, v1.Config{}, layerOf(t, file("v", "1"))))
	never, _ := newStore(t, func(c *Config) { c.Pull = PullNever })
	if _, err := never.Resolve(ctxT(t), ref, nil); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("never: %v", err)
	}
	strict, _ := newStore(t, func(c *Config) { c.Allow = []string{"docker.io/library/*"} })
	if _, err := strict.Resolve(ctxT(t), ref, nil); !errors.Is(err, sandbox.ErrInvalidArgument) || !strings.Contains(sandbox.PublicMessage(err), "not allowed") {
		t.Errorf("allow: %v", err)
	}
	s, home := newStore(t, func(c *Config) {
		c.Pull = PullAlways
		c.Allow = []string{reg.host + "/team/*"}
		c.InUse = func(_ context.Context, n string) (int, error) { return used[n], nil }
	})
	if _, err := s.Resolve(ctxT(t), "not a ref", nil); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("bad ref: %v", err)
	}
	r1, err := s.Resolve(ctxT(t), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// By its local name, without the registry.
	if r, err := s.Resolve(ctxT(t), r1.Name, nil); err != nil || r.Name != r1.Name {
		t.Errorf("by name: %+v %v", r, err)
	}
	// The tag moves while a box uses the image: the new one goes beside.
	used[r1.Name] = 1
	reg.push(t, "team/tool:1", imageOf(t, v1.Config{}, layerOf(t, file("v", "2"))))
	r2, err := s.Resolve(ctxT(t), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Name == r1.Name || read(t, filepath.Join(image.Dir(home, r2.Name), "rootfs/v")) != "2" || read(t, filepath.Join(image.Dir(home, r1.Name), "rootfs/v")) != "1" {
		t.Errorf("moved tag: %s then %s", r1.Name, r2.Name)
	}
	// A box uses the new one too: asking again finds it, and leaves it be
	// (it was rebuilt in place under the box on every pull).
	used[r2.Name] = 1
	ino := func() uint64 {
		fi, err := os.Stat(image.Dir(home, r2.Name))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	before := ino()
	if r3, err := s.Resolve(ctxT(t), ref, nil); err != nil || r3.Name != r2.Name {
		t.Errorf("after the move: %+v %v", r3, err)
	}
	if ino() != before {
		t.Errorf("the image a box uses was rebuilt")
	}
	if r, err := s.Resolve(ctxT(t), sandbox.DefaultImage, nil); err != nil || r.Name != sandbox.DefaultImage {
		t.Errorf("default: %+v %v", r, err)
	}
}

func TestLocalName(t *testing.T) {
	for _, tt := range []struct{ ref, want string }{
		{"python:3.12-slim", "python-3.12-slim"},
		{"docker.io/library/python", "python-latest"},
		{"ghcr.io/org/tool:1.4", "ghcr.io-org-tool-1.4"},
		{"127.0.0.1:5000/x@sha256:" + strings.Repeat("ab", 32), "127.0.0.1-5000-x-sha256-abababababab"},
		{"registry.example:5000/a/very/long/repository/name/that/goes/on/and/on:and-a-long-tag", ""},
	} {
		got := LocalName(mustRef(t, tt.ref))
		if (tt.want != "" && got != tt.want) || len(got) > 63 || !validName(got) {
			t.Errorf("LocalName(%s) = %q", tt.ref, got)
		}
	}
}

func TestAllowed(t *testing.T) {
	for _, tt := range []struct {
		pats []string
		ref  string
		ok   bool
	}{
		{nil, "python:3.12", true},
		{[]string{"docker.io/library/python"}, "python:3.12", true},
		{[]string{"docker.io/library/python:3.12*"}, "python:3.12-slim", true},
		{[]string{"docker.io/library/python:3.12*"}, "python:3.11", false},
		{[]string{"ghcr.io/org/*"}, "ghcr.io/org/sub/tool:1", true},
		{[]string{"ghcr.io/org/*"}, "ghcr.io/other/tool:1", false},
		{[]string{"ghcr.io/org/*"}, "ghcr.io/org.evil/tool:1", false},
		// A host pattern matches the host only, never a longer one.
		{[]string{"*.corp.example/*"}, "registry.corp.example/tool:1", true},
		{[]string{"*.corp.example/*"}, "evil.com/x.corp.example/tool:1", false},
		{[]string{"registry.corp.example*/*"}, "registry.corp.example:5000/tool:1", true},
		{[]string{"registry.corp.example*/*"}, "registry.corp.example.evil.com/tool:1", false},
		{[]string{"registry.corp.example*"}, "registry.corp.example.evil.com/tool:1", false},
		{[]string{"*/library/python*"}, "python:3", false}, // docker.io has a dot
		{[]string{"*/library/python*"}, "evil.com/library/python:3", false},
		{[]string{"localhost:5000/*"}, "localhost:5000/a/b:1", true},
	} {
		if got := allowed(tt.pats, mustRef(t, tt.ref)); got != tt.ok {
			t.Errorf("allowed(%v, %s) = %v", tt.pats, tt.ref, got)
		}
	}
}

// TestAgentRefresh: a pulled image gets the configured agent again when
// it changes, in its tree and its ext4 disk, unless a box uses it.
func TestAgentRefresh(t *testing.T) {
	used := 0
	s, home := newStore(t, func(c *Config) {
		c.InUse = func(context.Context, string) (int, error) { return used, nil }
	})
	reg := startRegistry(t)
	ref := reg.push(t, "agent:1", imageOf(t, v1.Config{}, layerOf(t, file("f", "x"))))
	_, name, err := s.Pull(ctxT(t), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agentIn := filepath.Join(image.Dir(home, name), "rootfs", image.AgentPath)
	time.Sleep(10 * time.Millisecond) // a new modification time for the agent cache key
	if err := os.WriteFile(s.cfg.Agent, []byte("#!/bin/sh\necho agent v2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	used = 1
	if _, err := s.Resolve(ctxT(t), name, nil); err != nil || read(t, agentIn) != "#!/bin/sh\necho agent\n" {
		t.Fatalf("refreshed an image in use: %v", err)
	}
	used = 0
	if _, err := s.Resolve(ctxT(t), name, nil); err != nil || read(t, agentIn) != "#!/bin/sh\necho agent v2\n" {
		t.Fatalf("agent not refreshed: %v", err)
	}
	out, err := exec.Command("debugfs", "-R", "cat "+image.AgentPath, filepath.Join(image.Dir(home, name), "rootfs.ext4")).Output()
	if err != nil || string(out) != "#!/bin/sh\necho agent v2\n" {
		t.Errorf("ext4 agent: %q %v", out, err)
	}
	if m, _ := ReadMeta(image.Dir(home, name)); m == nil || m.AgentSHA256 == "" {
		t.Errorf("meta %+v", m)
	}
}
