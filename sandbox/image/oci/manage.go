package oci

// image list, image rm, image prune, and keeping pulled images' guest
// agent and boot files current.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/inroot"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// Info is one line of `image list`.
type Info struct {
	Name      string    `json:"name"`
	Reference string    `json:"reference"` // OCI reference, "import:<file>" or "debootstrap <suite>"
	Digest    string    `json:"digest,omitempty"`
	Bytes     int64     `json:"bytes"` // unpacked root file system
	Created   time.Time `json:"created"`
	Boxes     int       `json:"boxes"`
}

// List returns every image of the home, OCI or built.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	ents, err := os.ReadDir(s.imagesDir())
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			continue
		}
		img, err := image.Locate(s.cfg.Home, e.Name())
		if err != nil {
			continue
		}
		in := Info{Name: img.Name, Bytes: img.Manifest.RootfsBytes, Created: img.Manifest.Created,
			Reference: strings.TrimSpace("debootstrap " + img.Manifest.Suite)}
		if m, err := ReadMeta(img.Dir); err == nil {
			in.Reference, in.Digest = m.Reference, m.Digest
			if m.Source == "import" {
				in.Reference = "import:" + m.Reference
			}
		}
		if in.Boxes, err = s.inUse(ctx, img.Name); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes image name unless a box uses it. Its layers stay cached
// until Prune.
func (s *Store) Remove(ctx context.Context, name string) error {
	if !validName(name) {
		return sandbox.Errorf(sandbox.ErrInvalidArgument, "image name %q is not valid", name)
	}
	unlock, err := s.lockImage(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	dir := image.Dir(s.cfg.Home, name)
	if _, err := os.Lstat(dir); err != nil {
		return sandbox.Errorf(sandbox.ErrNotFound, "no image %q (image list shows the images)", name)
	}
	n, err := s.inUse(ctx, name)
	if err != nil {
		return err
	}
	if n > 0 {
		return sandbox.Errorf(sandbox.ErrFailedPrecondition, "image %q is used by %d box(es); destroy them first", name, n)
	}
	tmp, err := tempDir(s.imagesDir(), "rm", name)
	if err != nil {
		return err
	}
	os.Remove(tmp)
	if err := os.Rename(dir, tmp); err != nil {
		return err
	}
	return os.RemoveAll(tmp)
}

// PruneReport says what Prune removed.
type PruneReport struct {
	Layers   int
	Bytes    int64
	Leftover int // directories of interrupted pulls and removals
}

// Prune removes cached layers no image refers to, and leftovers of
// interrupted pulls whose image is not locked.
func (s *Store) Prune(ctx context.Context) (PruneReport, error) {
	var rep PruneReport
	ents, err := os.ReadDir(s.imagesDir())
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || !(strings.HasPrefix(n, ".pull-") || strings.HasPrefix(n, ".rm-") || strings.HasPrefix(n, ".import-")) {
			continue
		}
		// .<kind>-<name>-<8 hex>: free when <name>'s lock is.
		base := n[strings.Index(n, "-")+1:]
		if i := strings.LastIndex(base, "-"); i > 0 {
			base = base[:i]
		}
		unlock, ok := tryLock(filepath.Join(s.imagesDir(), "."+base+".lock"))
		if !ok {
			continue
		}
		if os.RemoveAll(filepath.Join(s.imagesDir(), n)) == nil {
			rep.Leftover++
		}
		unlock()
	}
	// The references are read under the cache's exclusive lock: no pull
	// runs meanwhile, so none is between caching a layer and recording it.
	keep := map[string]bool{}
	layers, bytes, err := s.cache.prune(ctx, keep, func() error {
		ents, err := os.ReadDir(s.imagesDir())
		if err != nil {
			return err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") && !strings.HasPrefix(e.Name(), ".pull-") {
				continue
			}
			m, err := ReadMeta(filepath.Join(s.imagesDir(), e.Name()))
			if err != nil {
				continue
			}
			for _, l := range m.Layers {
				keep[strings.TrimPrefix(l, "sha256:")] = true
			}
		}
		return nil
	})
	rep.Layers, rep.Bytes = layers, bytes
	return rep, err
}

// agentSHA returns the sha256 of the configured agent, cached by size and
// modification time.
func (s *Store) agentSHA() (string, error) {
	fi, err := os.Stat(s.cfg.Agent)
	if err != nil {
		return "", err
	}
	key := fmt.Sprintf("%s|%d|%d", s.cfg.Agent, fi.Size(), fi.ModTime().UnixNano())
	s.mu.Lock()
	sum, ok := s.agentSum[key]
	s.mu.Unlock()
	if ok {
		return sum, nil
	}
	f, err := os.Open(s.cfg.Agent)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	s.mu.Lock()
	s.agentSum[key] = sum
	s.mu.Unlock()
	return sum, nil
}

// bootSHA is the initramfs digest of the boot image ("" without one).
func (s *Store) bootSHA() string {
	b, err := os.ReadFile(filepath.Join(s.cfg.BootImage, "manifest.json"))
	if err != nil {
		return ""
	}
	var m image.Manifest
	if json.Unmarshal(b, &m) != nil || m.Kernel == nil {
		return ""
	}
	return m.Kernel.InitrdSHA
}

// freshen gives a pulled image the configured guest agent and the boot
// image's current VM files when they changed, unless a box uses the image
// (a VM's disk must not change under it). Failures are logged: the image
// stays usable as it is.
func (s *Store) freshen(ctx context.Context, name string, m *Meta) *Meta {
	if s.cfg.Agent == "" {
		return m
	}
	want, err := s.agentSHA()
	boot := s.bootSHA()
	agentStale := err == nil && want != m.AgentSHA256
	bootStale := boot != "" && (m.Boot == nil || m.Boot.InitrdSHA != boot)
	if !agentStale && !bootStale {
		return m
	}
	unlock, err := s.lockImage(ctx, name)
	if err != nil {
		return m
	}
	defer unlock()
	if n, err := s.inUse(ctx, name); err != nil || n > 0 {
		return m
	}
	dir := image.Dir(s.cfg.Home, name)
	if cur, err := ReadMeta(dir); err == nil {
		m = cur
	}
	nm, err := s.refresh(ctx, dir, *m, agentStale, bootStale)
	if err != nil {
		s.log.Warn("could not update the image's guest agent or boot files", "image", name, "err", err)
		return m
	}
	s.log.Info("updated the image's guest agent and boot files", "image", name)
	return nm
}

func (s *Store) refresh(ctx context.Context, dir string, m Meta, agent, boot bool) (*Meta, error) {
	img, err := image.Locate(s.cfg.Home, filepath.Base(dir))
	if err != nil {
		return nil, err
	}
	man := img.Manifest
	if agent {
		root, err := unix.Open(img.RootfsDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer unix.Close(root)
		bin, err := inroot.Open(root, strings.TrimPrefix(filepath.Dir(image.AgentPath), "/"), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, err
		}
		sum, err := writeAgent(bin, filepath.Base(image.AgentPath), s.cfg.Agent)
		unix.Close(bin)
		if err != nil {
			return nil, err
		}
		script := filepath.Join(dir, ".debugfs-agent")
		p := image.AgentPath
		cmds := fmt.Sprintf("rm %s\nwrite %s %s\nsif %s mode 0100755\nsif %s uid 0\nsif %s gid 0\n", p, s.cfg.Agent, p, p, p, p)
		if err := os.WriteFile(script, []byte(cmds), 0o600); err != nil {
			return nil, err
		}
		defer os.Remove(script)
		logPath := filepath.Join(dir, "build.log")
		if err := runLogged(ctx, logPath, "debugfs", "-w", "-f", script, img.Ext4Path()); err != nil {
			return nil, fmt.Errorf("debugfs: %w: %s", err, tail(logPath))
		}
		m.AgentSHA256, man.AgentSHA256, man.AgentVersion = sum, sum, s.cfg.AgentVersion
	}
	if boot {
		k, b, err := s.addBoot(dir)
		if err != nil {
			return nil, err
		}
		m.Boot, man.Kernel = b, k
	}
	if err := writeJSON(filepath.Join(dir, MetaFile), &m); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(dir, "manifest.json"), &man); err != nil {
		return nil, err
	}
	return &m, nil
}
