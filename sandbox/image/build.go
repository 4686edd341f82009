package image

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/idshift"
)

// Build errors, for callers that want to tell them apart.
var (
	ErrNeedRoot    = errors.New("image build needs root")
	ErrMissingTool = errors.New("missing tool")
	ErrMirror      = errors.New("package mirror unreachable")
	ErrNoSpace     = errors.New("no space left on device")
)

// BuildConfig configures Build. Zero fields take defaults.
type BuildConfig struct {
	Home string // required
	Name string // default "default"
	// Agent is the path of the static boxlite-guest binary to install (required).
	Agent string
	// AgentVersion is recorded in the manifest.
	AgentVersion string
	Suite        string // default "bookworm"
	// Mirror is the Debian archive to build from (default: the one the
	// host's apt sources use; a build fails with ErrNoMirror without either).
	Mirror string
	// Packages are the Debian packages installed besides minbase (default:
	// DefaultPackages). The sorted list is recorded in the manifest, and an
	// image built with another list is rebuilt.
	Packages []string
	// Ext4Size is the size of rootfs.ext4 (default 4 GiB, sparse).
	Ext4Size int64
	// Kernel, when set, adds VM boot files (vmlinuz, initramfs.cpio).
	Kernel func(ctx context.Context, dir string, step func(string) func()) (*Kernel, error)
	// Initramfs rebuilds initramfs.cpio in an image dir for a new agent.
	Initramfs func(dir, agent string, k *Kernel) (sha string, err error)
	// Progress receives one line per step with its timing (default: discard).
	Progress io.Writer
	// Force rebuilds a complete image.
	Force  bool
	Logger *slog.Logger
}

func (c *BuildConfig) setDefaults() {
	if c.Name == "" {
		c.Name = "default"
	}
	if c.Suite == "" {
		c.Suite = "bookworm"
	}
	if len(c.Packages) == 0 {
		c.Packages = DefaultPackages
	}
	c.Packages = normPackages(c.Packages)
	if c.Ext4Size == 0 {
		c.Ext4Size = 4 << 30
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// DefaultPackages are the Debian packages of the default image besides
// minbase (bash and coreutils are in minbase): Python with the data stack
// and Jupyter's kernel (interpreter sessions), Node.js with acorn (the
// JavaScript session driver rewrites top-level declarations with it), and a
// font for matplotlib.
var DefaultPackages = []string{
	"python3", "nodejs", "node-acorn", "ca-certificates",
	"python3-ipykernel", "python3-numpy", "python3-pandas", "python3-matplotlib", "fonts-dejavu-core",
	"python3-scipy", "python3-sklearn", "python3-pil", "python3-requests",
	// The providers of the virtual packages python3-zmq
	// (python3-cffi-backend-api-*) and gdb, through libsource-highlight
	// (libboost-regex1.74.0-icu72), depend on: apt would pick them itself,
	// but the list is what identifies an image build (a change rebuilds
	// every image made with the old one).
	"python3-cffi-backend", "libboost-regex1.74.0",
}

// packageRE is a Debian package name.
var packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// CheckPackages checks names are Debian package names.
func CheckPackages(names []string) error {
	for _, n := range names {
		if !packageRE.MatchString(n) {
			return fmt.Errorf("%q is not a Debian package name", n)
		}
	}
	return nil
}

// normPackages returns names sorted, without duplicates.
func normPackages(names []string) []string {
	out := append([]string{}, names...)
	sort.Strings(out)
	return slices.Compact(out)
}

// packagesChanged says why an image built as m lacks the packages asked
// for (want, normalised), or "" when it has them. An image whose manifest
// records no list predates the list and is rebuilt.
func packagesChanged(m Manifest, want []string) string {
	have := strings.Join(m.Requested, ",")
	if have == strings.Join(want, ",") {
		return ""
	}
	if have == "" {
		return "records no package list (built by an older boxlite-mcp)"
	}
	return fmt.Sprintf("was built with the packages %s, not %s", have, strings.Join(want, ","))
}

// Preflight checks what a build needs and says what to do about it.
func Preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("building an image runs mmdebstrap, which needs root; run `sudo boxlite-mcp image build`: %w", ErrNeedRoot)
	}
	for tool, pkg := range map[string]string{"mmdebstrap": "mmdebstrap", "mke2fs": "e2fsprogs", "unshare": "util-linux", "chroot": "coreutils"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found; install it with `apt-get install %s`: %w", tool, pkg, ErrMissingTool)
		}
	}
	return nil
}

// Build builds image cfg.Name unless a complete one exists, and returns it.
func Build(ctx context.Context, cfg BuildConfig) (*Image, error) {
	cfg.setDefaults()
	if cfg.Home == "" || cfg.Agent == "" {
		return nil, errors.New("image: BuildConfig.Home and Agent are required")
	}
	imagesDir := filepath.Join(cfg.Home, "images")
	if err := os.MkdirAll(imagesDir, 0o711); err != nil {
		return nil, noSpace(err, imagesDir)
	}
	unlock, err := lockFile(ctx, filepath.Join(imagesDir, "."+cfg.Name+".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !cfg.Force {
		if img, err := Locate(cfg.Home, cfg.Name); err == nil {
			if why := packagesChanged(img.Manifest, cfg.Packages); why != "" {
				fmt.Fprintf(cfg.Progress, "image %q %s; rebuilding it\n", cfg.Name, why)
				return rebuild(ctx, cfg, imagesDir)
			}
			if img.Manifest.JailUIDBase != 0 {
				fmt.Fprintf(cfg.Progress, "image %q is owned by the old shared jail id range; giving its files their real owners\n", cfg.Name)
				if img, err = restoreOwners(img); err != nil {
					return nil, err
				}
			}
			sum, err := fileSHA256(cfg.Agent)
			if err != nil {
				return nil, fmt.Errorf("guest agent %s: %w", cfg.Agent, err)
			}
			if cfg.Kernel != nil && img.Manifest.Kernel == nil {
				fmt.Fprintf(cfg.Progress, "image %q has no VM boot files; adding them\n", cfg.Name)
				if img, err = addKernel(ctx, img, cfg); err != nil {
					return nil, err
				}
			}
			if sum == img.Manifest.AgentSHA256 {
				fmt.Fprintf(cfg.Progress, "image %q is already built (%s); nothing to do\n", cfg.Name, img.Dir)
				return img, nil
			}
			fmt.Fprintf(cfg.Progress, "image %q has another guest agent than %s; updating it in place\n", cfg.Name, cfg.Agent)
			return refreshAgent(ctx, img, cfg, sum)
		}
	}
	return rebuild(ctx, cfg, imagesDir)
}

// rebuild builds image cfg.Name from scratch (the caller holds its lock).
func rebuild(ctx context.Context, cfg BuildConfig, imagesDir string) (*Image, error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	if cfg.Mirror == "" {
		uri, from, err := HostMirror(ctx, "/", cfg.Suite)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Progress, "Debian mirror %s (from %s; --mirror overrides it)\n", uri, from)
		cfg.Mirror = uri
	} else if err := CheckMirror(cfg.Mirror); err != nil {
		return nil, err
	}
	// Leftovers of interrupted builds of this image.
	old, _ := filepath.Glob(filepath.Join(imagesDir, ".build-"+cfg.Name+"-*"))
	for _, d := range old {
		cfg.Logger.Info("removing an interrupted build", "dir", d)
		detachMounts(d)
		os.RemoveAll(d)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(imagesDir, ".build-"+cfg.Name+"-"+hex.EncodeToString(rnd[:]))
	if err := os.MkdirAll(tmp, 0o711); err != nil {
		return nil, noSpace(err, tmp)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	b := &builder{cfg: cfg, dir: tmp, start: time.Now()}
	m, err := b.run(ctx)
	if err != nil {
		return nil, err
	}
	final := Dir(cfg.Home, cfg.Name)
	if _, err := os.Stat(final); err == nil {
		trash := final + ".old-" + hex.EncodeToString(rnd[:])
		if err := os.Rename(final, trash); err != nil {
			return nil, err
		}
		defer os.RemoveAll(trash)
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	ok = true
	fmt.Fprintf(cfg.Progress, "image %q built in %.1fs: %s (%d packages, rootfs %d MiB)\n",
		cfg.Name, m.BuildSeconds, final, len(m.Packages), m.RootfsBytes>>20)
	return Locate(cfg.Home, cfg.Name)
}

type builder struct {
	cfg   BuildConfig
	dir   string
	start time.Time
	n     int
}

// step prints a step line and returns a func printing its duration.
func (b *builder) step(what string) func() {
	b.n++
	t := time.Now()
	total := 5
	if b.cfg.Kernel != nil {
		total = 6
	}
	fmt.Fprintf(b.cfg.Progress, "[%d/%d] %s ...\n", b.n, total, what)
	return func() { fmt.Fprintf(b.cfg.Progress, "      done in %.1fs\n", time.Since(t).Seconds()) }
}

func (b *builder) run(ctx context.Context) (*Manifest, error) {
	cfg := b.cfg
	rootfs := filepath.Join(b.dir, "rootfs")
	logPath := filepath.Join(b.dir, "build.log")

	done := b.step(fmt.Sprintf("mmdebstrap %s (minbase + %s) from %s", cfg.Suite, strings.Join(cfg.Packages, ", "), cfg.Mirror))
	if err := bootstrap(ctx, cfg, rootfs, logPath); err != nil {
		return nil, err
	}
	// matplotlib builds its font cache on first use, seconds under
	// emulation: build it once here (best effort; root's cache, where the
	// sessions run).
	if _, err := os.Stat(filepath.Join(rootfs, "usr/lib/python3/dist-packages/matplotlib")); err == nil {
		if err := runLogged(ctx, logPath, "chroot", rootfs, "/usr/bin/env", "HOME=/root", "MPLBACKEND=agg", "python3", "-c", "import matplotlib.pyplot"); err != nil {
			cfg.Logger.Warn("warming matplotlib's font cache failed", "err", err)
		}
	}
	syncFS(rootfs)
	done()

	done = b.step("installing the guest agent at " + AgentPath)
	agentSum, err := copyFile(cfg.Agent, filepath.Join(rootfs, AgentPath), 0o755)
	if err != nil {
		return nil, noSpace(err, rootfs)
	}
	// Trim what a box never needs.
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_Packages"} {
		ms, _ := filepath.Glob(filepath.Join(rootfs, g))
		for _, p := range ms {
			os.RemoveAll(p)
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc/hostname"), []byte("box\n"), 0o644)
	done()

	pkgs, err := dpkgPackages(filepath.Join(rootfs, "var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("reading the package list: %w", err)
	}

	done = b.step("making rootfs.ext4 for VM engines")
	ext4 := filepath.Join(b.dir, "rootfs.ext4")
	if err := runLogged(ctx, logPath, "mke2fs", "-q", "-t", "ext4", "-L", "boxlite-root", "-d", rootfs, ext4, fmt.Sprint(cfg.Ext4Size>>10)+"k"); err != nil {
		return nil, toolError("mke2fs", err, logPath)
	}
	ext4Sum, err := fileSHA256(ext4)
	if err != nil {
		return nil, err
	}
	done()

	var kern *Kernel
	if cfg.Kernel != nil {
		done = b.step("adding the VM kernel and initramfs")
		if kern, err = cfg.Kernel(ctx, b.dir, b.step); err != nil {
			return nil, err
		}
		done()
	}

	_, size, err := idshift.Tree(rootfs, 0, 0) // measures; rootfs keeps its real owners
	if err != nil {
		return nil, err
	}

	done = b.step("writing manifest.json")
	st, _ := os.Stat(ext4)
	m := &Manifest{
		FormatVersion: FormatVersion, Name: cfg.Name, Created: time.Now().UTC(), Suite: cfg.Suite, Variant: "minbase",
		Mirror: cfg.Mirror, Requested: cfg.Packages, Packages: pkgs, AgentVersion: cfg.AgentVersion, AgentSHA256: agentSum,
		RootfsBytes: size, Ext4Bytes: st.Size(), Ext4SHA256: ext4Sum, Kernel: kern,
		BuildSeconds: time.Since(b.start).Seconds(),
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(b.dir, "manifest.json"), data, 0o644); err != nil {
		return nil, noSpace(err, b.dir)
	}
	done()
	return m, nil
}

// runLogged runs a command with its output appended to logPath.
func runLogged(ctx context.Context, logPath, name string, args ...string) error {
	return runLoggedEnv(ctx, logPath, nil, name, args...)
}

// runLoggedEnv is runLogged with env added to the command's environment.
func runLoggedEnv(ctx context.Context, logPath string, env []string, name string, args ...string) error {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"), env...)
	return cmd.Run()
}

// logTail returns the last n lines of a log file.
func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func toolError(tool string, err error, logPath string) error {
	tail := logTail(logPath, 10)
	if strings.Contains(tail, "No space left") || strings.Contains(tail, "Could not allocate") {
		return fmt.Errorf("%s: disk full:\n%s\n%w", tool, tail, ErrNoSpace)
	}
	return fmt.Errorf("%s failed (%v):\n%s", tool, err, tail)
}

func noSpace(err error, where string) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("no space left for the image in %s: %w", where, ErrNoSpace)
	}
	return err
}

func copyFile(src, dst string, mode os.FileMode) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("guest agent %s: %w (run `make build` first)", src, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), out.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// dpkgPackages parses dpkg's status file: installed packages and versions.
func dpkgPackages(statusFile string) ([]Package, error) {
	b, err := os.ReadFile(statusFile)
	if err != nil {
		return nil, err
	}
	var out []Package
	for _, para := range strings.Split(string(b), "\n\n") {
		var p Package
		installed := false
		for _, line := range strings.Split(para, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			switch k {
			case "Package":
				p.Name = v
			case "Version":
				p.Version = v
			case "Status":
				installed = strings.HasSuffix(v, " installed")
			}
		}
		if p.Name != "" && installed {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// restoreOwners gives a legacy image's rootfs/ (owned by the shared jail id
// range of older versions) its real owners back, so no box's id range owns
// the shared lower layer. The manifest is written last: an interrupted run
// is finished by the next build (ids already below the range stay put).
func restoreOwners(img *Image) (*Image, error) {
	if _, _, err := idshift.Tree(img.RootfsDir(), img.Manifest.JailUIDBase, 0); err != nil {
		return nil, fmt.Errorf("restoring the owners of image %q: %w", img.Name, err)
	}
	m := img.Manifest
	m.JailUIDBase = 0
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(img.Dir, "manifest.json"), data); err != nil {
		return nil, noSpace(err, img.Dir)
	}
	return Locate(filepath.Dir(filepath.Dir(img.Dir)), img.Name)
}

// lockFile takes an exclusive flock on path, waiting until ctx is done.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another build of this image: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// refreshAgent replaces the guest agent of a built image (in rootfs/ and in
// rootfs.ext4, through debugfs) and rewrites the manifest: the packages are
// unchanged, so no rebuild is needed. The manifest is written last, so an
// interrupted refresh is retried by the next build.
func refreshAgent(ctx context.Context, img *Image, cfg BuildConfig, sum string) (*Image, error) {
	dst := filepath.Join(img.RootfsDir(), AgentPath)
	tmp := dst + ".new"
	err := func() error {
		if _, err := copyFile(cfg.Agent, tmp, 0o755); err != nil {
			return noSpace(err, dst)
		}
		if err := os.Lchown(tmp, 0, 0); err != nil {
			return err
		}
		return os.Rename(tmp, dst)
	}()
	if err != nil {
		os.Remove(tmp) // no half-copied agent left in the image
		return nil, err
	}
	script := filepath.Join(img.Dir, ".debugfs-agent")
	cmds := fmt.Sprintf("rm %s\nwrite %s %s\nsif %s mode 0100755\nsif %s uid 0\nsif %s gid 0\n", AgentPath, cfg.Agent, AgentPath, AgentPath, AgentPath, AgentPath)
	if err := os.WriteFile(script, []byte(cmds), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(script)
	logPath := filepath.Join(img.Dir, "build.log")
	if err := runLogged(ctx, logPath, "debugfs", "-w", "-f", script, img.Ext4Path()); err != nil {
		return nil, toolError("debugfs", err, logPath)
	}
	ext4Sum, err := fileSHA256(img.Ext4Path())
	if err != nil {
		return nil, err
	}
	m := img.Manifest
	if m.Kernel != nil && cfg.Initramfs != nil {
		k := *m.Kernel
		if k.InitrdSHA, err = cfg.Initramfs(img.Dir, cfg.Agent, &k); err != nil {
			return nil, fmt.Errorf("rebuilding the initramfs: %w", err)
		}
		m.Kernel = &k
	}
	m.AgentSHA256, m.AgentVersion, m.Ext4SHA256 = sum, cfg.AgentVersion, ext4Sum
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(img.Dir, "manifest.json"), data); err != nil {
		return nil, noSpace(err, img.Dir)
	}
	fmt.Fprintf(cfg.Progress, "image %q: guest agent updated\n", cfg.Name)
	return Locate(cfg.Home, cfg.Name)
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// addKernel adds VM boot files to a built image that lacks them.
func addKernel(ctx context.Context, img *Image, cfg BuildConfig) (*Image, error) {
	b := &builder{cfg: cfg, dir: img.Dir, start: time.Now()}
	k, err := cfg.Kernel(ctx, img.Dir, b.step)
	if err != nil {
		return nil, err
	}
	m := img.Manifest
	m.Kernel = k
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(img.Dir, "manifest.json"), data); err != nil {
		return nil, noSpace(err, img.Dir)
	}
	return Locate(cfg.Home, cfg.Name)
}
