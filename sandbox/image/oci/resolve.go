package oci

// Resolve (the manager's image source), registry errors, progress.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/boxlite-ai/boxlite-mcp/internal/names"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

var _ sandbox.ImageSource = (*Store)(nil)

// validName reports whether n can name a local image (as box images are
// checked by the manager).
func validName(n string) bool { return names.Valid(n) }

// Resolve implements sandbox.ImageSource: ref is an image on this host
// (by name), or a reference pulled as the policy says and the allow
// patterns permit. The result carries the image config for the box.
func (s *Store) Resolve(ctx context.Context, ref string, progress func(sandbox.ImageProgress)) (*sandbox.ResolvedImage, error) {
	if validName(ref) {
		dir := image.Dir(s.cfg.Home, ref)
		if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err == nil {
			m, _ := ReadMeta(dir)
			if m != nil {
				m = s.freshen(ctx, ref, m)
			}
			return resolved(ref, m), nil
		}
		if ref == sandbox.DefaultImage {
			return &sandbox.ResolvedImage{Name: ref}, nil // the engine says how to build it
		}
	}
	c, err := ParseRef(ref)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "image %q is neither an image on this server nor a valid image reference", ref)
	}
	if !allowed(s.cfg.Allow, c) {
		return nil, sandbox.Errorf(sandbox.ErrInvalidArgument, "image %s is not allowed on this server (it accepts %s)", c, strings.Join(s.cfg.Allow, ", "))
	}
	m, name, err := s.ensure(ctx, c, "", s.cfg.Pull, newTracker(progress))
	if err != nil {
		return nil, classify(err, c.String())
	}
	return resolved(name, s.freshen(ctx, name, m)), nil
}

func resolved(name string, m *Meta) *sandbox.ResolvedImage {
	r := &sandbox.ResolvedImage{Name: name}
	if m == nil {
		return r
	}
	r.Reference, r.Env, r.WorkDir, r.UID, r.GID = m.Reference, m.Env, m.Cwd, m.UID, m.GID
	return r
}

// registryError classifies what go-containerregistry returned.
func registryError(err error, what string) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			return sandbox.Wrapf(sandbox.ErrNotFound, err, "image %s was not found on its registry", what)
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "the registry refused access to %s; log in with `docker login` (boxlite-mcp reads ~/.docker/config.json)", what)
		case te.StatusCode == http.StatusTooManyRequests:
			return sandbox.Wrapf(sandbox.ErrUnavailable, err, "the registry rate-limits pulls of %s; try again later", what)
		}
		return sandbox.Wrapf(sandbox.ErrUnavailable, err, "the registry failed to serve %s (HTTP %d); try again", what, te.StatusCode)
	}
	var ne net.Error
	var oe *net.OpError
	var errno syscall.Errno
	// A bare errno is a net.Error too (EIO, EACCES on the server's disk):
	// only one from the network, or a network error that is not an
	// errno, means the registry is out of reach.
	if errors.As(err, &oe) || (errors.As(err, &ne) && !errors.As(err, &errno)) {
		return sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot reach the registry of %s; check the network", what)
	}
	return sandbox.Wrapf(sandbox.ErrUnavailable, err, "could not get image %s", what)
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// tracker turns byte counts and phases into ImageProgress callbacks, at
// most every 100 ms for byte counts.
type tracker struct {
	fn func(sandbox.ImageProgress)

	mu    sync.Mutex
	p     sandbox.ImageProgress
	phase string
	last  time.Time
}

func newTracker(fn func(sandbox.ImageProgress)) *tracker { return &tracker{fn: fn} }

// start begins a phase; total is its byte count (0: none or unknown).
func (t *tracker) start(phase string, total int64) {
	if t.fn == nil {
		return
	}
	t.mu.Lock()
	t.phase = phase
	t.p = sandbox.ImageProgress{Total: total, Message: phase}
	p := t.p
	t.mu.Unlock()
	t.fn(p)
}

// add counts downloaded bytes (negative: a failed attempt taken back).
func (t *tracker) add(n int64) {
	if t.fn == nil {
		return
	}
	t.mu.Lock()
	t.p.Done += n
	now := time.Now()
	if now.Sub(t.last) < 100*time.Millisecond && t.p.Done < t.p.Total {
		t.mu.Unlock()
		return
	}
	t.last = now
	t.p.Message = fmt.Sprintf("%s %s of %s", t.phase, mib(t.p.Done), mib(t.p.Total))
	p := t.p
	t.mu.Unlock()
	t.fn(p)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
