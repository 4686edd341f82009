// Command testregistry serves OCI test images from a registry on loopback
// for the e2e tests: test/python:1 (the default image's root file system,
// with a user, a working directory and an environment in its config) and
// test/nopython:1 (the same without Python). It prints "READY <addr>" and
// serves until stdin closes or it is signalled. With -write-tar FILE it
// serves nothing: it writes test/python:1 and test/plain:1 (the root file
// system with an empty config: root, no env) into one docker-archive
// tarball (for a cluster without a registry: `ctr images import`) and exits.
// (test/nopython:1 is left out: containerd's import recomputes its whiteout
// layer's diff id and refuses it; no cluster test needs it.)
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/boxlite-ai/boxlite-mcp/internal/ocitest"
)

func main() {
	rootfs := flag.String("rootfs", "", "root file system to serve as the images' base layer (required)")
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	slow := flag.Int64("slow-first", 0, "throttle the first download of each big blob to this many bytes a second")
	tarOut := flag.String("write-tar", "", "write the images into this docker-archive tarball and exit")
	flag.Parse()
	if *rootfs == "" {
		fmt.Fprintln(os.Stderr, "testregistry: -rootfs is required")
		os.Exit(2)
	}
	if *tarOut != "" {
		if err := writeTar(*rootfs, *tarOut); err != nil {
			fmt.Fprintln(os.Stderr, "testregistry:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*rootfs, *listen, *slow); err != nil {
		fmt.Fprintln(os.Stderr, "testregistry:", err)
		os.Exit(1)
	}
}

// testImages builds the test images on rootfs's layer, written under a
// scratch directory in dir ("": the temp dir) that done removes.
func testImages(rootfs, dir string) (base v1.Layer, py, nopy v1.Image, done func(), err error) {
	tmp, err := os.MkdirTemp(dir, ".testregistry-")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	done = func() { os.RemoveAll(tmp) }
	if base, err = ocitest.DirLayer(rootfs, filepath.Join(tmp, "base.tar"), false); err == nil {
		py, nopy, err = ocitest.BoxImages(base, rootfs)
	}
	if err != nil {
		done()
		return nil, nil, nil, nil, err
	}
	return base, py, nopy, done, nil
}

func run(rootfs, listen string, slow int64) error {
	_, py, nopy, done, err := testImages(rootfs, "")
	if err != nil {
		return err
	}
	defer done()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	reg := ocitest.Serve(l)
	defer reg.Close()
	for tag, img := range map[string]v1.Image{"test/python:1": py, "test/nopython:1": nopy} {
		if _, err := reg.Push(tag, img); err != nil {
			return err
		}
	}
	reg.SlowFirst = slow
	fmt.Printf("READY %s\n", reg.Addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	}
	return nil
}

// writeTar writes test/python:1 and test/plain:1 into one docker-archive
// (their shared base layer once).
func writeTar(rootfs, out string) error {
	base, py, _, done, err := testImages(rootfs, filepath.Dir(out))
	if err != nil {
		return err
	}
	defer done()
	plain, err := ocitest.Image(v1.Config{}, base)
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for tag, img := range map[string]v1.Image{"test/python:1": py, "test/plain:1": plain} {
		t, err := name.NewTag(tag)
		if err != nil {
			return err
		}
		refs[t] = img
	}
	if err := tarball.MultiRefWriteToFile(out+".tmp", refs); err != nil {
		os.Remove(out + ".tmp")
		return err
	}
	return os.Rename(out+".tmp", out)
}
