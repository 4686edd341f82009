package oci_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/ocitest"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image/oci"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
)

// BenchmarkOCIPull: pulling and unpacking an image (the default image's
// tree as one gzip layer) from a loopback registry, against `tar -xzf` of
// the same layer, interleaved; MB/s are of unpacked bytes (1 GiB at X MB/s
// takes 1074/X s). "pull" is the whole install (download, digest check,
// unpack, agent, rootfs.ext4); "pull-cached" the same with the layer
// already cached.
func BenchmarkOCIPull(b *testing.B) {
	testenv.RequireRoot(b)
	base := baseImage(b)
	dir := b.TempDir()
	layer, err := ocitest.DirLayer(base.RootfsDir(), filepath.Join(dir, "layer.tar.gz"), true)
	if err != nil {
		b.Fatal(err)
	}
	img, err := ocitest.Image(v1.Config{}, layer)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	reg := ocitest.Serve(l)
	defer reg.Close()
	ref, err := reg.Push("bench/img:1", img)
	if err != nil {
		b.Fatal(err)
	}
	store := func(home string) *oci.Store {
		s, err := oci.New(oci.Config{Home: home, Agent: testenv.Agent(b), AgentVersion: guestagent.Version, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	// The home of "pull-cached": the layer stays, the image is removed
	// before each pull.
	cachedHome := b.TempDir()
	cached := store(cachedHome)
	m, name, err := cached.Pull(context.Background(), ref, oci.PullOptions{})
	if err != nil {
		b.Fatal(err)
	}
	bench.Env("oci image", fmt.Sprintf("the default image's tree as one gzip layer, %d MiB unpacked", m.UnpackedBytes>>20))
	scratch := b.TempDir()
	bench.Compare(b, 3,
		bench.Case{Name: "baseline", Bytes: m.UnpackedBytes, Op: func(b *testing.B) time.Duration {
			out, _ := os.MkdirTemp(scratch, "tar-")
			defer os.RemoveAll(out)
			t0 := time.Now()
			if o, err := exec.Command("tar", "--numeric-owner", "-xzpf", filepath.Join(dir, "layer.tar.gz"), "-C", out).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v %s", err, o)
			}
			return time.Since(t0)
		}},
		bench.Case{Name: "pull", Bytes: m.UnpackedBytes, Op: func(b *testing.B) time.Duration {
			home, _ := os.MkdirTemp(scratch, "home-")
			defer os.RemoveAll(home)
			s := store(home)
			t0 := time.Now()
			if _, _, err := s.Pull(context.Background(), ref, oci.PullOptions{}); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}},
		bench.Case{Name: "pull-cached", Bytes: m.UnpackedBytes, Op: func(b *testing.B) time.Duration {
			if err := cached.Remove(context.Background(), name); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if _, _, err := cached.Pull(context.Background(), ref, oci.PullOptions{}); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}})
}

// BenchmarkOCICreateFirstResult: create to the first result of a run
// (python3 -c print(1)) on the jail engine, for a cached OCI image against
// the default image, interleaved.
func BenchmarkOCICreateFirstResult(b *testing.B) {
	testenv.RequireRoot(b)
	base := baseImage(b)
	py, _ := boxImages(b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	reg := ocitest.Serve(l)
	defer reg.Close()
	ref, err := reg.Push("bench/python:1", py)
	if err != nil {
		b.Fatal(err)
	}
	home := b.TempDir()
	os.MkdirAll(filepath.Join(home, "images"), 0o711)
	if err := os.Symlink(base.Dir, filepath.Join(home, "images", sandbox.DefaultImage)); err != nil {
		b.Fatal(err)
	}
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	src, err := oci.New(oci.Config{Home: home, Agent: testenv.Agent(b), AgentVersion: guestagent.Version, BootImage: filepath.Join(home, "none")})
	if err != nil {
		b.Fatal(err)
	}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{jail.New(jail.Config{Home: home})}, Images: src})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if _, err := src.Resolve(ctx, ref, nil); err != nil { // cached before timing
		b.Fatal(err)
	}
	first := func(image string) func(b *testing.B) time.Duration {
		return func(b *testing.B) time.Duration {
			t0 := time.Now()
			box, err := m.Create(ctx, "b", sandbox.CreateRequest{Image: image, MemoryMiB: 256})
			if err != nil {
				b.Fatal(err)
			}
			res, _, err := m.Exec(ctx, "b", box.ID, sandbox.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}, Cwd: "/"}, sandbox.ExecIO{})
			if err != nil || res.ExitCode != 0 {
				b.Fatalf("run: %+v %v", res, err)
			}
			d := time.Since(t0)
			m.Destroy(ctx, "b", box.ID)
			return d
		}
	}
	bench.Compare(b, 10, bench.Case{Name: "baseline", Op: first("")}, bench.Case{Name: "oci", Op: first(ref)})
}
