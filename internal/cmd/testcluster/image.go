package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// writePauseImage writes the pod sandbox image: this (static) binary as
// /pause, which runs pause() when called by that name.
func writePauseImage(out string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	return out, binaryImage(out, pauseRef, self, "/pause", []string{"/pause"})
}

// binaryImage writes a docker-archive tarball of a one-file image: the
// static program src at path in the image, run as entrypoint.
func binaryImage(out, ref, src, path string, entrypoint []string) error {
	if err := requireStatic(src); err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(path, "/"), Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: entrypoint, Env: []string{"PATH=/"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, tag, img)
}

// requireStatic refuses a dynamically linked program: the images have no
// libc to load it with.
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// importImage loads a docker-archive tarball into the CRI's namespace of
// the cluster's containerd.
func importImage(ctx context.Context, c *Cluster, file string) error {
	out, err := helper(ctx, "ctr", "--address", c.ContainerdSocket, "-n", "k8s.io",
		"images", "import", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import %s: %v: %s", file, err, strings.TrimSpace(string(out)))
	}
	return nil
}
