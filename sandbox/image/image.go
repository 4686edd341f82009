// Package image builds, verifies and locates guest images.
//
// An image lives in home/images/<name>/ and holds:
//
//	rootfs/        the root file system as a directory (the jail engine's
//	               overlay lower layer), with its real owners (root): no
//	               box's id range owns it, boxes see it through a read-only
//	               idmapped mount
//	rootfs.ext4    the same tree as an ext4 file system with real owners
//	               (the VM engines' root disk, under a per-box qcow2 overlay)
//	vmlinuz, initramfs.cpio   the VM kernel and boot files (when built)
//	manifest.json  what is inside: packages, agent version, sizes, checksums
//
// Builds happen in a temporary directory beside the final one and are renamed
// into place only when complete, under a lock, so an interrupted build is
// never mistaken for an image and two concurrent builds do not collide.
package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// FormatVersion is the manifest format this code writes and reads.
const FormatVersion = 1

// AgentPath is where the guest agent lives inside every image.
const AgentPath = "/usr/local/bin/boxlite-guest"

// ErrNotBuilt means the image does not exist (or is incomplete).
var ErrNotBuilt = errors.New("image not built")

// Package is one installed Debian package.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Kernel describes the VM kernel files of an image.
type Kernel struct {
	Package    string   `json:"package"` // e.g. linux-image-6.1.0-37-cloud-amd64
	Version    string   `json:"version"`
	Release    string   `json:"release"` // uname -r
	Modules    []string `json:"modules"` // in load order, paths inside the initramfs
	VmlinuzSHA string   `json:"vmlinuz_sha256"`
	InitrdSHA  string   `json:"initramfs_sha256"`
}

// Manifest describes a built image.
type Manifest struct {
	FormatVersion int       `json:"format_version"`
	Name          string    `json:"name"`
	Created       time.Time `json:"created"`
	Suite         string    `json:"suite"`
	Variant       string    `json:"variant"`
	Mirror        string    `json:"mirror"`
	// Requested are the packages the build asked for (sorted); Packages
	// is everything installed.
	Requested    []string  `json:"requested_packages"`
	Packages     []Package `json:"packages"`
	AgentVersion string    `json:"agent_version"`
	AgentSHA256  string    `json:"agent_sha256"`
	RootfsBytes  int64     `json:"rootfs_bytes"`
	Ext4Bytes    int64     `json:"ext4_bytes"`
	Ext4SHA256   string    `json:"ext4_sha256"`
	// JailUIDBase is non-zero only in images of older versions, whose
	// rootfs/ was owned by one id range shared by every jail box; Build
	// gives such an image its real owners back and sets it to 0.
	JailUIDBase  uint32  `json:"jail_uid_base,omitempty"`
	Kernel       *Kernel `json:"kernel,omitempty"`
	BuildSeconds float64 `json:"build_seconds"`
}

// Image is a built image on disk.
type Image struct {
	Name     string
	Dir      string
	Manifest Manifest
}

// RootfsDir is the root file system directory.
func (i *Image) RootfsDir() string { return filepath.Join(i.Dir, "rootfs") }

// Ext4Path is the root file system image for VMs.
func (i *Image) Ext4Path() string { return filepath.Join(i.Dir, "rootfs.ext4") }

// KernelPath is the VM kernel.
func (i *Image) KernelPath() string { return filepath.Join(i.Dir, "vmlinuz") }

// InitrdPath is the VM initramfs.
func (i *Image) InitrdPath() string { return filepath.Join(i.Dir, "initramfs.cpio") }

// Dir returns the directory of image name in home.
func Dir(home, name string) string { return filepath.Join(home, "images", name) }

// Locate returns the image called name, or ErrNotBuilt with a message
// saying how to build it.
func Locate(home, name string) (*Image, error) {
	dir := Dir(home, name)
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("image %q is not built; run `boxlite-mcp image build --name %s`: %w", name, name, ErrNotBuilt)
	}
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("image %q has a corrupt manifest (%v); rebuild it: %w", name, err, ErrNotBuilt)
	}
	if m.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("image %q has manifest format %d, this boxlite-mcp reads %d; rebuild it: %w", name, m.FormatVersion, FormatVersion, ErrNotBuilt)
	}
	img := &Image{Name: name, Dir: dir, Manifest: m}
	for _, p := range []string{img.RootfsDir(), img.Ext4Path()} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("image %q is incomplete (%s missing); rebuild it: %w", name, filepath.Base(p), ErrNotBuilt)
		}
	}
	return img, nil
}

// Identity names the exact build of image name: a digest of its manifest,
// which records the build time, the packages, the agent and the root
// file system's checksum, so a rebuild (or a refreshed agent) gives a new
// identity. A warm pool records it on each box and hands out only boxes of
// the current build.
func Identity(home, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(Dir(home, name), "manifest.json"))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("image %q is not built; run `boxlite-mcp image build --name %s`: %w", name, name, ErrNotBuilt)
	}
	if err != nil {
		return "", fmt.Errorf("image %q: %w", name, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12]), nil
}
