// Package oci turns ordinary container images into boxlite images: it
// pulls them from registries (go-containerregistry: the docker keychain,
// platform selection from indexes, digest checks, retries; plain HTTP only
// to loopback), imports `docker save` tarballs and OCI layouts, caches
// layers content-addressed in home/layers/sha256/<hex>, and flattens them
// with OCI whiteout semantics into images/<name>/rootfs (the jail's lower
// layer, with the layers' real owners) and rootfs.ext4 (the VMs' disk),
// with the guest agent injected and the default image's VM boot files.
//
// Unpacking never writes outside the root: names with "..", absolute
// names, and parents through symlinks are resolved inside the root (a
// symlink of the layer being unpacked is never followed), device nodes are
// skipped, owners beyond a box's 65536 ids become nobody, and the unpacked
// size is capped. An image is built in a temporary directory beside the
// final one under the image's lock and renamed into place, so a failed or
// interrupted pull leaves nothing that looks like an image.
//
// A Store is safe for concurrent use, and several processes may share one
// home: images are locked by name, blobs by digest, and pulls hold the
// cache's shared lock that prune takes exclusively.
package oci

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// PullPolicy says when Resolve contacts a registry.
type PullPolicy string

// Pull policies (serve --pull).
const (
	PullMissing PullPolicy = "missing" // pull references not on this host (default)
	PullNever   PullPolicy = "never"   // use only what is on this host
	PullAlways  PullPolicy = "always"  // re-check tags on every create
)

// Config configures a Store. Zero fields take defaults.
type Config struct {
	// Home is the boxlite home (required).
	Home string
	// Agent is the static guest agent binary injected into every image
	// (required to pull or import).
	Agent        string
	AgentVersion string
	// BootImage is the directory of the image whose VM kernel and
	// initramfs OCI images reuse (default home/images/default).
	BootImage string
	// Pull and Allow are Resolve's policy: when to pull, and which
	// references to accept (patterns; none: any).
	Pull  PullPolicy
	Allow []string
	// InUse counts the boxes using an image (the registry knows); nil
	// means none do. Images in use are never replaced or removed.
	InUse func(ctx context.Context, name string) (int, error)
	// Keychain finds registry credentials (default: the docker config,
	// ~/.docker/config.json or $DOCKER_CONFIG, and credential helpers).
	Keychain authn.Keychain
	// Platform is the variant chosen from indexes (default linux/GOARCH).
	Platform v1.Platform
	// MaxUnpackedBytes and MaxEntries cap what one image may unpack to
	// (default 32 GiB and 2 million entries).
	MaxUnpackedBytes int64
	MaxEntries       int
	// Jobs is how many layers download at once (default 3).
	Jobs int
	// Transport is the HTTP transport to registries (default: go-
	// containerregistry's); plain HTTP off loopback is refused on top.
	Transport http.RoundTripper
	// Tenants says the server has tenants other than its operator (serve
	// with tokens): then registries on the server's own host (loopback,
	// link-local and unspecified addresses, checked when connecting, after
	// DNS) are refused, unless an Allow pattern names one literally
	// (127.0.0.1:5000/*): a tenant's image reference must not make the
	// server probe its own ports. The default transport only.
	Tenants bool
	Logger  *slog.Logger
}

// Store pulls, imports, lists and removes OCI images of one home.
type Store struct {
	cfg   Config // immutable after New
	cache *cache
	log   *slog.Logger

	mu       sync.Mutex // guards agentSum
	agentSum map[string]string
}

// New returns a Store for cfg.Home.
func New(cfg Config) (*Store, error) {
	if cfg.Home == "" {
		return nil, errors.New("oci: Config.Home is required")
	}
	if cfg.BootImage == "" {
		cfg.BootImage = image.Dir(cfg.Home, sandbox.DefaultImage)
	}
	switch cfg.Pull {
	case "":
		cfg.Pull = PullMissing
	case PullMissing, PullNever, PullAlways:
	default:
		return nil, fmt.Errorf("oci: pull policy %q: want missing, never or always", cfg.Pull)
	}
	for _, p := range cfg.Allow {
		if err := CheckPattern(p); err != nil {
			return nil, err
		}
	}
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	if cfg.Platform.OS == "" {
		cfg.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	if cfg.MaxUnpackedBytes <= 0 {
		cfg.MaxUnpackedBytes = 32 << 30
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 2 << 20
	}
	if cfg.Jobs <= 0 {
		cfg.Jobs = 3
	}
	if cfg.Transport == nil {
		cfg.Transport = remote.DefaultTransport
		if cfg.Tenants {
			cfg.Transport = noLocalRegistries(cfg.Allow)
		}
	}
	cfg.Transport = loopbackHTTPOnly{next: cfg.Transport}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := newCache(cfg.Home)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Home, "images"), 0o711); err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, cache: c, log: cfg.Logger.With("component", "oci"), agentSum: map[string]string{}}, nil
}

func (s *Store) imagesDir() string { return filepath.Join(s.cfg.Home, "images") }

func (s *Store) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(s.cfg.Keychain),
		remote.WithPlatform(s.cfg.Platform), remote.WithTransport(s.cfg.Transport), remote.WithUserAgent("boxlite-mcp")}
}

// lockImage takes image name's lock, the one `image build` takes.
func (s *Store) lockImage(ctx context.Context, name string) (func(), error) {
	return lockFile(ctx, filepath.Join(s.imagesDir(), "."+name+".lock"), unix.LOCK_EX)
}

func (s *Store) inUse(ctx context.Context, name string) (int, error) {
	if s.cfg.InUse == nil {
		return 0, nil
	}
	return s.cfg.InUse(ctx, name)
}

// PullOptions are the options of Pull and Import.
type PullOptions struct {
	// Name is the local image name (default: derived from the reference).
	Name string
	// Progress receives download and unpack progress (may be nil).
	Progress func(sandbox.ImageProgress)
}

// Pull fetches ref from its registry (always asking the registry what the
// reference points at now) and installs it unless the same image is there.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Meta, string, error) {
	c, err := ParseRef(ref)
	if err != nil {
		return nil, "", sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%v", err)
	}
	if opts.Name != "" && !validName(opts.Name) {
		return nil, "", sandbox.Errorf(sandbox.ErrInvalidArgument, "image name %q is not valid: use letters, digits, '.', '_' or '-' (at most 63)", opts.Name)
	}
	m, name, err := s.ensure(ctx, c, opts.Name, PullAlways, newTracker(opts.Progress))
	return m, name, classify(err, c.String())
}

// find returns the newest image installed from reference c.
func (s *Store) find(c canonicalRef) (string, *Meta) {
	ents, _ := os.ReadDir(s.imagesDir())
	var best *Meta
	bestName := ""
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			continue
		}
		m, err := ReadMeta(filepath.Join(s.imagesDir(), e.Name()))
		if err != nil || m.Source != "registry" || m.Reference != c.String() {
			continue
		}
		if _, err := image.Locate(s.cfg.Home, e.Name()); err != nil {
			continue
		}
		if best == nil || m.Pulled.After(best.Pulled) {
			best, bestName = m, e.Name()
		}
	}
	return bestName, best
}

// ensure returns an installed image of reference c, pulling it as policy
// says. name, when set, is the local name to install under.
func (s *Store) ensure(ctx context.Context, c canonicalRef, name string, policy PullPolicy, tr *tracker) (*Meta, string, error) {
	if policy != PullAlways || c.byDigest() {
		if n, m := s.find(c); m != nil && (name == "" || name == n) {
			return m, n, nil
		}
	}
	if policy == PullNever {
		return nil, "", sandbox.Errorf(sandbox.ErrNotFound, "image %s is not on this server, and it does not pull images (serve --pull never); an operator can run `boxlite-mcp image pull %s`", c, c)
	}
	names := []string{name}
	if name == "" {
		names = []string{LocalName(c), LocalName(c) + "-" + shortHash(c.String())}
	}
	for _, n := range names {
		unlock, ok := tryLock(filepath.Join(s.imagesDir(), "."+n+".lock"))
		if !ok {
			tr.start("waiting for another pull of "+c.String(), 0)
			var err error
			if unlock, err = s.lockImage(ctx, n); err != nil {
				return nil, "", err
			}
		}
		m, got, err := s.pullLocked(ctx, c, n, policy, tr)
		unlock()
		if errors.Is(err, errNameTaken) && name == "" {
			continue
		}
		return m, got, err
	}
	return nil, "", fmt.Errorf("no free local name for %s", c)
}

var errNameTaken = errors.New("image name taken")

// pullLocked installs c as name (or, when boxes use an older version of
// it, beside it) and returns the name; the caller holds name's lock.
func (s *Store) pullLocked(ctx context.Context, c canonicalRef, name string, policy PullPolicy, tr *tracker) (*Meta, string, error) {
	dir := image.Dir(s.cfg.Home, name)
	old, oldErr := ReadMeta(dir)
	if oldErr == nil && (old.Source != "registry" || old.Reference != c.String()) {
		return nil, "", fmt.Errorf("%w: image %q holds %s", errNameTaken, name, old.Reference)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err == nil && oldErr != nil {
		return nil, "", fmt.Errorf("%w: image %q is a local image", errNameTaken, name)
	}
	if oldErr == nil && (policy != PullAlways || c.byDigest()) {
		return old, name, nil // another pull finished while we waited
	}
	tr.start("resolving "+c.String(), 0)
	src, err := registrySource(c, s.cfg.Platform, s.remoteOptions(ctx))
	if err != nil {
		return nil, "", err
	}
	if oldErr == nil && old.Resolved == src.resolved {
		return old, name, nil // the tag still points at what we have
	}
	if oldErr == nil {
		n, err := s.inUse(ctx, name)
		if err != nil {
			return nil, "", err
		}
		if n > 0 {
			// Boxes use the old version: the new one gets its own name.
			versioned := name + "-" + strings.TrimPrefix(src.resolved, "sha256:")[:12]
			unlock, err := s.lockImage(ctx, versioned)
			if err != nil {
				return nil, "", err
			}
			defer unlock()
			if vm, err := ReadMeta(image.Dir(s.cfg.Home, versioned)); err == nil {
				if vm.Source == "registry" && vm.Reference == c.String() && vm.Resolved == src.resolved {
					return vm, versioned, nil // installed beside it already (and maybe in use: never rebuilt)
				}
				return nil, "", fmt.Errorf("%w: image %q holds %s at %s", errNameTaken, versioned, vm.Reference, vm.Resolved)
			}
			s.log.Info("the reference moved and boxes use the old image; installing beside it", "image", name, "new_name", versioned)
			name = versioned
		}
	}
	m, err := s.installLocked(ctx, src, name, tr)
	return m, name, err
}

// leftoverPulls are the directories of interrupted pulls of image name
// (tempDir's: the name, then 8 hex digits): not another name's that
// begins with this one (x-a's are not x-a-b's, which may be running).
func leftoverPulls(imagesDir, name string) []string {
	ents, _ := os.ReadDir(imagesDir)
	var out []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), ".pull-"+name+"-")
		if _, err := hex.DecodeString(rest); ok && err == nil && len(rest) == 8 && e.IsDir() {
			out = append(out, filepath.Join(imagesDir, e.Name()))
		}
	}
	return out
}

// installLocked builds src as image name; the caller holds name's lock.
func (s *Store) installLocked(ctx context.Context, src *source, name string, tr *tracker) (*Meta, error) {
	if fi, err := os.Stat(s.cfg.Agent); s.cfg.Agent == "" || err != nil || !fi.Mode().IsRegular() {
		return nil, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "this server has no guest agent to put into images; build it (`make build`) or the default image (`boxlite-mcp image build`)")
	}
	for _, d := range leftoverPulls(s.imagesDir(), name) {
		s.log.Info("removing an interrupted pull", "dir", d)
		os.RemoveAll(d)
	}
	release, err := s.cache.use(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.fetchLayers(ctx, src, tr); err != nil {
		return nil, err
	}
	tmp, err := tempDir(s.imagesDir(), "pull", name)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	t0 := time.Now()
	m, err := s.build(ctx, src, name, tmp, tr)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := place(tmp, image.Dir(s.cfg.Home, name)); err != nil {
		return nil, err
	}
	ok = true
	s.log.Info("image installed", "image", name, "reference", src.ref, "digest", src.digest, "layers", len(src.layers),
		"unpacked_mib", m.UnpackedBytes>>20, "seconds", time.Since(t0).Seconds())
	return m, nil
}

// Import installs a docker save tarball, an OCI layout directory or an
// OCI layout tarball as image opts.Name (required), replacing an image of
// that name that no box uses.
func (s *Store) Import(ctx context.Context, path string, opts PullOptions) (*Meta, error) {
	if !validName(opts.Name) {
		return nil, sandbox.Errorf(sandbox.ErrInvalidArgument, "image name %q is not valid: use letters, digits, '.', '_' or '-' (at most 63)", opts.Name)
	}
	tr := newTracker(opts.Progress)
	unlock, err := s.lockImage(ctx, opts.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if n, err := s.inUse(ctx, opts.Name); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, sandbox.Errorf(sandbox.ErrFailedPrecondition, "image %q is used by %d box(es); destroy them or import under another name", opts.Name, n)
	}
	tmp, err := tempDir(s.imagesDir(), "import", opts.Name)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	tr.start("reading "+filepath.Base(path), 0)
	src, err := importSource(path, tmp, s.cfg.Platform)
	if err != nil {
		return nil, classify(err, filepath.Base(path))
	}
	m, err := s.installLocked(ctx, src, opts.Name, tr)
	return m, classify(err, filepath.Base(path))
}

// classify gives errors of pulls and imports their class and public text.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	var se *sandbox.Error
	if errors.As(err, &se) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return sandbox.Wrapf(sandbox.ErrDeadlineExceeded, err, "pulling %s was cancelled or timed out; nothing was installed", what)
	case errors.Is(err, errUnsafe):
		return sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %s was refused: %v", what, publicCause(err))
	case errors.Is(err, errNotDir), errors.Is(err, errImageLayout), errors.Is(err, errPlatform), errors.Is(err, errNotImage):
		return sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %s cannot be used: %v", what, publicCause(err))
	case errors.Is(err, ErrTooLarge):
		return sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "image %s is too large: %v", what, publicCause(err))
	case errors.Is(err, ErrDigest):
		return sandbox.Wrapf(sandbox.ErrUnavailable, err, "image %s: a blob did not match its digest (corrupt download or registry); nothing was installed", what)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "no space left on the server's disk for image %s", what)
	case errors.Is(err, errLocalRegistry):
		return sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "image %s: its registry is on this server's own host (loopback or link-local), which this server's tenants may not pull from; an operator can pull it (boxlite-mcp image pull) or allow that registry with --allow-image HOST:PORT/*", what)
	case errors.Is(err, errStalled):
		return sandbox.Wrapf(sandbox.ErrUnavailable, err, "image %s: the registry sent a layer too slowly (less than %d KiB in %s), so the pull was abandoned; try again", what, stallBytes>>10, stallWindow)
	case errors.Is(err, errPlainHTTP):
		return sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %s: the registry is only reachable over plain HTTP, which boxlite-mcp uses for loopback registries only", what)
	}
	return registryError(err, what)
}

// publicCause is the error text without host paths: the part after the
// last class marker the package adds.
func publicCause(err error) string {
	s := err.Error()
	for _, m := range []error{errUnsafe, errNotDir, errImageLayout, errPlatform, errNotImage, ErrTooLarge} {
		if i := strings.Index(s, m.Error()+": "); i >= 0 {
			return s[i+len(m.Error())+2:]
		}
	}
	return s
}
