package oci

// Where images come from: a registry (go-containerregistry's remote), an
// OCI image layout (directory or tarball) or a `docker save` tarball. Each
// becomes a source: its config and its layers as blobs to cache.

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxLayers bounds the layers of one image (Docker stops at 127).
const maxLayers = 256

// maxConfigBytes bounds an image's config blob (real ones are a few KiB,
// with a long history some hundred), read into memory before anything
// else; maxRunBytes bounds its run settings (Entrypoint, Cmd, Env,
// WorkingDir, User), which every box of the image carries.
const (
	maxConfigBytes = 4 << 20
	maxRunBytes    = 256 << 10
)

// source is an image ready to be cached and unpacked.
type source struct {
	kind     string // "registry" or "import"
	ref      string // canonical reference, or the imported file's name
	resolved string // digest the reference pointed at (index or manifest)
	digest   string // the image's manifest digest (imports of docker save: its config digest)
	platform string
	cfg      *v1.ConfigFile
	layers   []srcLayer
}

// srcLayer is one layer as a blob: key is the digest of the bytes open
// returns, which is what the cache stores and checks.
type srcLayer struct {
	key       v1.Hash
	size      int64 // bytes open returns, 0 when unknown
	mediaType string
	open      func() (io.ReadCloser, error)
}

// errPlatform means the image has no variant for this host.
var errPlatform = errors.New("no image for this platform")

// errNotImage means the artifact is not a container image we can unpack.
var errNotImage = errors.New("not a container image")

// pickChild chooses the index entry for platform: the first linux entry of
// the same architecture (and variant, when both name one).
func pickChild(im *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() && !d.MediaType.IsIndex() {
			continue
		}
		p := v1.Platform{OS: "linux", Architecture: "amd64"} // the spec's default
		if d.Platform != nil {
			p = *d.Platform
		}
		if p.OS == "unknown" {
			continue // attestations
		}
		if len(have) < 16 {
			have = append(have, platformString(p))
		} else if len(have) == 16 {
			have = append(have, "…")
		}
		if p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == "" || p.Variant == want.Variant) {
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w: the image has no %s variant (it has %s)", errPlatform, platformString(want), orNone(strings.Join(have, ", ")))
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// imageFromIndex resolves an index (possibly nested once) to an image.
func imageFromIndex(idx v1.ImageIndex, want v1.Platform, depth int) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	d, err := pickChild(im, want)
	if err != nil {
		return nil, err
	}
	if d.MediaType.IsIndex() {
		if depth > 2 {
			return nil, fmt.Errorf("%w: indexes nested too deep", errNotImage)
		}
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		return imageFromIndex(child, want, depth+1)
	}
	return idx.Image(d.Digest)
}

// fromImage fills a source's config and layers from an image whose
// layers are fetched compressed (registry, OCI layout).
func fromImage(s *source, img v1.Image, want v1.Platform) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	// The config is read whole, up to the size the manifest declares
	// (the registry client checks it): bound that first.
	if m.Config.Size > maxConfigBytes {
		return fmt.Errorf("%w: its config is %d bytes (at most %d)", errNotImage, m.Config.Size, maxConfigBytes)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading the image config: %w", err)
	}
	if err := checkConfig(cfg, want); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	s.cfg, s.digest = cfg, d.String()
	s.platform = platformString(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
	if len(m.Layers) > maxLayers {
		return fmt.Errorf("%w: %d layers (at most %d)", errNotImage, len(m.Layers), maxLayers)
	}
	for _, ld := range m.Layers {
		if !layerMediaType(ld.MediaType) {
			return fmt.Errorf("%w: a layer has media type %s", errNotImage, ld.MediaType)
		}
		if err := checkDigest(ld.Digest); err != nil {
			return err
		}
		if len(ld.URLs) > 0 {
			// The registry client would fetch them, from any host.
			return fmt.Errorf("%w: a layer names URLs to fetch it from (foreign layers are not supported)", errNotImage)
		}
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return err
		}
		s.layers = append(s.layers, srcLayer{key: ld.Digest, size: ld.Size, mediaType: string(ld.MediaType), open: l.Compressed})
	}
	return nil
}

// layerMediaType accepts the tar layer types (gzip, zstd or plain);
// foreign and non-distributable layers (Windows) are refused.
func layerMediaType(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer:
		return true
	}
	return false
}

func checkConfig(cfg *v1.ConfigFile, want v1.Platform) error {
	run := len(cfg.Config.WorkingDir) + len(cfg.Config.User)
	for _, l := range [][]string{cfg.Config.Entrypoint, cfg.Config.Cmd, cfg.Config.Env} {
		for _, v := range l {
			run += len(v) + 1
		}
	}
	if run > maxRunBytes {
		return fmt.Errorf("%w: its run settings (entrypoint, cmd, env, working directory, user) are %d bytes (at most %d)", errNotImage, run, maxRunBytes)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return fmt.Errorf("%w: the image is for %s, boxes run linux", errPlatform, cfg.OS)
	}
	if cfg.Architecture != "" && cfg.Architecture != want.Architecture {
		return fmt.Errorf("%w: the image is for %s, this host runs %s", errPlatform, cfg.Architecture, want.Architecture)
	}
	return nil
}

// registrySource resolves a reference on its registry.
func registrySource(ref canonicalRef, want v1.Platform, opts []remote.Option) (*source, error) {
	desc, err := remote.Get(ref.ref, opts...)
	if err != nil {
		return nil, err
	}
	s := &source{kind: "registry", ref: ref.String(), resolved: desc.Digest.String()}
	var img v1.Image
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		if img, err = imageFromIndex(idx, want, 0); err != nil {
			return nil, err
		}
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: the reference names a %s", errNotImage, desc.MediaType)
	}
	return s, fromImage(s, img, want)
}

// importSource reads a docker save tarball, an OCI layout directory or an
// OCI layout tarball. tmpDir is where an OCI layout tarball is unpacked.
func importSource(path, tmpDir string, want v1.Platform) (*source, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	s := &source{kind: "import", ref: filepath.Base(path)}
	if fi.IsDir() {
		return s, layoutImage(s, path, want)
	}
	hasManifest, hasLayout, err := tarballKind(path)
	if err != nil {
		return nil, err
	}
	switch {
	case hasManifest:
		img, err := tarball.ImageFromPath(path, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: reading the docker save tarball: %v", errNotImage, err)
		}
		return s, fromTarball(s, img, want)
	case hasLayout:
		if err := unpackLayout(path, tmpDir); err != nil {
			return nil, err
		}
		return s, layoutImage(s, tmpDir, want)
	}
	return nil, fmt.Errorf("%w: %s is neither a docker save tarball (manifest.json) nor an OCI layout (oci-layout)", errNotImage, filepath.Base(path))
}

func layoutImage(s *source, dir string, want v1.Platform) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("%w: reading the OCI layout: %v", errNotImage, err)
	}
	img, err := imageFromIndex(idx, want, 0)
	if err != nil {
		return err
	}
	if err := fromImage(s, img, want); err != nil {
		return err
	}
	s.resolved = s.digest
	return nil
}

// fromTarball fills a source from a docker save image: its layers are
// stored uncompressed, keyed (and checked) by their diff ids, since
// go-containerregistry would have to compress them to learn a digest.
func fromTarball(s *source, img v1.Image, want v1.Platform) error {
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	if err := checkConfig(cfg, want); err != nil {
		return err
	}
	cd, err := img.ConfigName()
	if err != nil {
		return err
	}
	s.cfg, s.digest, s.resolved = cfg, cd.String(), cd.String()
	s.platform = platformString(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	if len(ls) > maxLayers {
		return fmt.Errorf("%w: %d layers (at most %d)", errNotImage, len(ls), maxLayers)
	}
	for _, l := range ls {
		d, err := l.DiffID()
		if err != nil {
			return err
		}
		if err := checkDigest(d); err != nil {
			return err
		}
		s.layers = append(s.layers, srcLayer{key: d, mediaType: string(types.OCIUncompressedLayer), open: l.Uncompressed})
	}
	return nil
}

// tarballKind says whether a tar file holds a docker save manifest.json
// and/or an OCI layout.
func tarballKind(path string) (manifest, layout bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return manifest, layout, nil
		}
		if err != nil {
			return false, false, fmt.Errorf("%w: %s is not a tar file: %v", errNotImage, filepath.Base(path), err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "manifest.json":
			manifest = true
		case "oci-layout":
			layout = true
		}
	}
}

var layoutNameRE = regexp.MustCompile(`^(oci-layout|index\.json|blobs/sha256/[a-f0-9]{64})$`)

// unpackLayout extracts an OCI layout tarball into dir: only the layout's
// own files (oci-layout, index.json, blobs/sha256/<hex>) as regular files,
// so nothing in the tarball can place a file elsewhere.
func unpackLayout(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o700); err != nil {
		return err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag != tar.TypeReg || !layoutNameRE.MatchString(name) {
			continue
		}
		out, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(name)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}
