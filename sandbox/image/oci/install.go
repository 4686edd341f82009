package oci

// Installing a source as images/<name>: layers into the cache, the tree
// unpacked into a temporary directory beside the final one, the agent,
// rootfs.ext4 and the VM boot files added, then one rename.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/boxlite-ai/boxlite-mcp/internal/names"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// MetaFile is the file beside manifest.json that makes an image an OCI image.
const MetaFile = "oci.json"

// metaFormat is the version of Meta this code writes.
const metaFormat = 1

// Meta describes where an OCI image came from and the config that applies
// to its boxes.
type Meta struct {
	Format     int      `json:"format"`
	Source     string   `json:"source"`    // "registry" or "import"
	Reference  string   `json:"reference"` // canonical reference, or the imported file's name
	Resolved   string   `json:"resolved"`  // digest the reference pointed at (index or manifest)
	Digest     string   `json:"digest"`    // image manifest digest (docker save imports: config digest)
	Platform   string   `json:"platform"`
	Layers     []string `json:"layers"` // cached blobs, bottom first
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	UID        *uint32  `json:"uid,omitempty"` // nil: root
	GID        *uint32  `json:"gid,omitempty"`
	Cwd        string   `json:"cwd"` // default directory of runs
	// Entrypoint and Cmd are recorded for reference only: boxes run the agent.
	Entrypoint    []string  `json:"entrypoint,omitempty"`
	Cmd           []string  `json:"cmd,omitempty"`
	Boot          *Boot     `json:"boot,omitempty"`
	AgentSHA256   string    `json:"agent_sha256"`
	Pulled        time.Time `json:"pulled"`
	ImageCreated  time.Time `json:"image_created,omitzero"`
	UnpackedBytes int64     `json:"unpacked_bytes"`
	Skipped       Skipped   `json:"skipped,omitzero"`
}

// Boot says where the VM boot files came from.
type Boot struct {
	From      string `json:"from"`   // image directory name, e.g. "default"
	Linked    bool   `json:"linked"` // hard links (else copies)
	InitrdSHA string `json:"initramfs_sha256"`
}

// Skipped counts what unpacking left out or changed.
type Skipped struct {
	Devices int `json:"devices,omitempty"`
	Xattrs  int `json:"xattrs,omitempty"`
	Clamped int `json:"clamped_owners,omitempty"`
	Unknown int `json:"unknown_types,omitempty"`
}

// ReadMeta reads the OCI metadata of the image in dir; os.ErrNotExist
// for images that were not pulled or imported.
func ReadMeta(dir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", MetaFile, err)
	}
	return &m, nil
}

// fetchLayers puts every layer of src into the cache, a few at a time.
func (s *Store) fetchLayers(ctx context.Context, src *source, tr *tracker) error {
	// What the manifest declares is what the registry client lets through
	// (it checks each blob's size): a layer can unpack to no less than
	// it is compressed, so layers over the unpack cap are refused before
	// a byte is fetched.
	var total, declared int64
	for _, l := range src.layers {
		if l.size < 0 {
			return fmt.Errorf("%w: a layer of %d bytes", errNotImage, l.size)
		}
		declared += l.size
		if !s.cache.has(l.key) {
			total += l.size
		}
	}
	if declared > s.cfg.MaxUnpackedBytes {
		return fmt.Errorf("%w: its layers are %d MiB compressed (at most %d MiB unpacked)", ErrTooLarge, declared>>20, s.cfg.MaxUnpackedBytes>>20)
	}
	tr.start("downloading", total)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Jobs)
	for _, l := range src.layers {
		if s.cache.has(l.key) {
			continue
		}
		g.Go(func() error {
			limit := l.size // unknown (an import): the cap
			if limit == 0 {
				limit = s.cfg.MaxUnpackedBytes
			}
			if err := s.cache.put(gctx, l.key, limit, l.open, tr.add); err != nil {
				return fmt.Errorf("layer %s: %w", l.key, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// build makes the image directory tmp from src's cached layers.
func (s *Store) build(ctx context.Context, src *source, name, tmp string, tr *tracker) (*Meta, error) {
	t0 := time.Now()
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(rootfs, 0o755); err != nil {
		return nil, err
	}
	t, err := openTree(rootfs)
	if err != nil {
		return nil, err
	}
	defer t.close()
	stats := &unpackStats{}
	u := &unpacker{ctx: ctx, t: t, lim: limits{bytes: s.cfg.MaxUnpackedBytes, entries: s.cfg.MaxEntries}, stats: stats, log: s.log}
	var meta Meta
	for i, l := range src.layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tr.start(fmt.Sprintf("unpacking layer %d/%d", i+1, len(src.layers)), 0)
		if err := s.unpackBlob(u, l); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i+1, l.key, err)
		}
		meta.Layers = append(meta.Layers, l.key.String())
	}
	u.finish()
	if stats.Devices > 0 || stats.Clamped > 0 || stats.Unknown > 0 {
		s.log.Info("unpacked with changes", "image", name, "devices_skipped", stats.Devices, "owners_clamped", stats.Clamped, "unknown_skipped", stats.Unknown)
	}
	tr.start("adding the guest agent", 0)
	if err := addBaseDirs(t); err != nil {
		return nil, err
	}
	if meta.AgentSHA256, err = injectAgent(t, s.cfg.Agent); err != nil {
		return nil, err
	}
	c := src.cfg.Config
	usr, err := lookupUser(t, c.User)
	if err != nil {
		return nil, err
	}
	if meta.Cwd, err = workDir(t, c.WorkingDir, usr); err != nil {
		return nil, err
	}
	if c.User != "" && usr.uid != 0 {
		meta.UID, meta.GID = &usr.uid, &usr.gid
	}
	meta.Env = imageEnv(c.Env, usr)
	meta.WorkingDir, meta.User, meta.Entrypoint, meta.Cmd = c.WorkingDir, c.User, c.Entrypoint, c.Cmd

	tr.start("making rootfs.ext4 for VM engines", 0)
	ext4 := filepath.Join(tmp, "rootfs.ext4")
	size := ext4Size(stats.Bytes)
	logPath := filepath.Join(tmp, "build.log")
	if err := runLogged(ctx, logPath, "mke2fs", "-q", "-t", "ext4", "-L", "boxlite-root", "-N", fmt.Sprint(ext4Inodes(size, stats.Entries)), "-d", rootfs, ext4, fmt.Sprint(size>>10)+"k"); err != nil {
		return nil, fmt.Errorf("mke2fs: %w: %s", err, tail(logPath))
	}
	kern, boot, err := s.addBoot(tmp)
	if err != nil {
		return nil, err
	}
	meta.Boot = boot

	meta.Format, meta.Source, meta.Reference, meta.Resolved, meta.Digest, meta.Platform =
		metaFormat, src.kind, src.ref, src.resolved, src.digest, src.platform
	meta.Pulled, meta.ImageCreated, meta.UnpackedBytes = time.Now().UTC(), src.cfg.Created.Time, stats.Bytes
	meta.Skipped = Skipped{Devices: stats.Devices, Xattrs: stats.Xattrs, Clamped: stats.Clamped, Unknown: stats.Unknown}
	if err := writeJSON(filepath.Join(tmp, MetaFile), &meta); err != nil {
		return nil, err
	}
	st, err := os.Stat(ext4)
	if err != nil {
		return nil, err
	}
	m := image.Manifest{FormatVersion: image.FormatVersion, Name: name, Created: meta.Pulled, Variant: "oci",
		AgentVersion: s.cfg.AgentVersion, AgentSHA256: meta.AgentSHA256, RootfsBytes: stats.Bytes, Ext4Bytes: st.Size(),
		Kernel: kern, BuildSeconds: time.Since(t0).Seconds()}
	if err := writeJSON(filepath.Join(tmp, "manifest.json"), &m); err != nil {
		return nil, err
	}
	return &meta, nil
}

// ext4Size is the size of an image's (sparse) ext4 disk: 4 GiB like the
// default image's, or the content with a quarter and 512 MiB to spare, in
// 256 MiB steps. A box's disk (disk_mib) must be at least this big.
// ext4Inodes is the inode count of an ext4 of size bytes for an image of
// entries files: mke2fs's default (one per 16 KiB) unless the image needs
// more (many small files ran out of inodes after unpacking fully), with
// room for as many again plus some for what boxes add.
func ext4Inodes(size int64, entries int) int64 {
	return max(size/(16<<10), 2*int64(entries)+65536)
}

func ext4Size(content int64) int64 {
	const step = 256 << 20
	need := content + content/4 + 512<<20
	return max(4<<30, (need+step-1)/step*step)
}

// unpackBlob unpacks one cached layer blob (gzip, zstd or plain tar).
func (s *Store) unpackBlob(u *unpacker, l srcLayer) error {
	f, err := os.Open(s.cache.path(l.key))
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(4)
	var r io.Reader = br
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	return u.layer(r)
}

// maxImageEnv bounds the variables taken from an image config.
const maxImageEnv = 200

// imageEnv keeps the config's valid KEY=VALUE entries (later ones win)
// and adds HOME for a non-root user that the config did not set.
func imageEnv(env []string, u user) []string {
	var out []string
	idx := map[string]int{}
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !names.ValidEnvKey(k) || strings.IndexByte(kv, 0) >= 0 {
			continue
		}
		if i, dup := idx[k]; dup {
			out[i] = kv
			continue
		}
		if len(out) == maxImageEnv {
			break
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := idx["HOME"]; !ok && u.home != "/root" {
		out = append(out, "HOME="+u.home)
	}
	return out
}

// addBoot copies or links the VM kernel and initramfs of the boot image
// into dir. Without a boot image with VM files, the image has none (the
// VM engines then say so).
func (s *Store) addBoot(dir string) (*image.Kernel, *Boot, error) {
	src := s.cfg.BootImage
	b, err := os.ReadFile(filepath.Join(src, "manifest.json"))
	if err != nil {
		return nil, nil, nil
	}
	var m image.Manifest
	if json.Unmarshal(b, &m) != nil || m.Kernel == nil {
		return nil, nil, nil
	}
	boot := &Boot{From: filepath.Base(src), Linked: true, InitrdSHA: m.Kernel.InitrdSHA}
	for _, f := range []string{"vmlinuz", "initramfs.cpio"} {
		from, to := filepath.Join(src, f), filepath.Join(dir, f)
		os.Remove(to)
		if err := os.Link(from, to); err == nil {
			continue
		}
		boot.Linked = false
		if err := copyFile(from, to); err != nil {
			return nil, nil, fmt.Errorf("VM boot file %s: %w", f, err)
		}
	}
	k := *m.Kernel
	return &k, boot, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(to+".tmp", to)
	}
	if err != nil {
		os.Remove(to + ".tmp")
	}
	return err
}

func writeJSON(path string, v any) error {
	b, _ := json.MarshalIndent(v, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func runLogged(ctx context.Context, logPath, name string, args ...string) error {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	return cmd.Run()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}

// tempDir makes a fresh directory images/.<kind>-<name>-<random>.
func tempDir(imagesDir, kind, name string) (string, error) {
	var rnd [4]byte
	rand.Read(rnd[:])
	d := filepath.Join(imagesDir, "."+kind+"-"+name+"-"+hex.EncodeToString(rnd[:]))
	return d, os.Mkdir(d, 0o711)
}

// place renames tmp to images/<name>, moving an existing image aside and
// removing it after.
func place(tmp, final string) error {
	syncDir(tmp)
	if _, err := os.Lstat(final); err == nil {
		var rnd [4]byte
		rand.Read(rnd[:])
		trash := filepath.Join(filepath.Dir(final), "."+"rm-"+filepath.Base(final)+"-"+hex.EncodeToString(rnd[:]))
		if err := os.Rename(final, trash); err != nil {
			return err
		}
		defer os.RemoveAll(trash)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	syncDir(filepath.Dir(final))
	return nil
}
