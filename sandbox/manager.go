// Package sandbox is the box manager: it owns the box lifecycle (a state
// machine persisted in SQLite), serialises lifecycle changes with per-box
// file locks so several server processes can share one home, reconciles
// stored state with reality at start, and stops idle and destroys expired
// boxes. Engines (jail, qemu, krun) run the boxes behind the Engine
// interface; the manager never builds a VMM command line and engines never
// touch SQL.
package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/boxlite-ai/boxlite-mcp/internal/names"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// Limits on what a box may ask for.
const (
	MaxCPUs         = 16
	MinMemoryMiB    = 64
	MaxMemoryMiB    = 64 << 10
	DefaultCPUs     = 1
	DefaultMemory   = 512
	DefaultImage    = "default"
	DefaultDiskMiB  = 4096
	MinDiskMiB      = 256
	MaxDiskMiB      = 64 << 10
	MaxEnvEntries   = 256
	engineStateFile = "engine.json"
)

// Config configures a Manager. Zero fields take the documented defaults.
type Config struct {
	// Home is the boxlite home directory (required).
	Home string
	// Store is the box store (required); the Manager does not close it.
	Store *persist.Store
	// Engines are the engines this server may use, in the order "auto"
	// prefers them.
	Engines []Engine
	// IdleTimeout stops a box unused this long (default 15 min).
	IdleTimeout time.Duration
	// ReapInterval is how often Run looks for idle and expired boxes (default 30 s).
	ReapInterval time.Duration
	// StartTimeout bounds one box start (default 3 min: TCG boots are slow).
	StartTimeout time.Duration
	// StopGrace is how long Stop waits for a graceful shutdown before killing (default 10 s).
	StopGrace time.Duration
	// SessionGrace is how long a session call may outlast its own timeout
	// on the host (default 3 min): the interpreter's start, an interrupt's
	// grace and the wait for the session's earlier calls.
	SessionGrace time.Duration
	// MaxMemoryMiB caps the memory of all live boxes on this home together
	// (default: the host's RAM minus 1 GiB).
	MaxMemoryMiB int
	// MaxBoxes caps the boxes on this home (0: only the id ranges limit).
	MaxBoxes int
	// OwnerMaxBoxes caps the boxes of one owner (0: no cap).
	OwnerMaxBoxes int
	// MaxSnapshotBytes caps the disk space of all snapshots (0: no cap).
	MaxSnapshotBytes int64
	// HostCPUs is the most CPUs one box may have (default: the host's).
	HostCPUs int
	// ClientName identifies this server in agent logs.
	ClientName string
	// Images resolves create requests' images (references are pulled);
	// nil: image names are used as they are.
	Images ImageSource
	// Pools keeps this many pooled boxes of the default shape per engine
	// (see pool.go); StartPool starts the refills.
	Pools map[string]int
	// PoolConcurrency bounds the pool fills in flight (default 2);
	// PoolInterval is how often the pools are checked (default 2 s).
	PoolConcurrency int
	PoolInterval    time.Duration
	// Logger receives the manager's logs (default: discard).
	Logger *slog.Logger
	// Now and BootID replace the clock and the host boot id (tests).
	Now    func() time.Time
	BootID func() (string, error)
}

// Manager runs boxes. It is safe for concurrent use.
type Manager struct {
	// Immutable after New.
	cfg     Config
	store   *persist.Store
	log     *slog.Logger
	engines map[string]Engine
	order   []string
	ctx     context.Context // cancelled by Close; bounds background work
	cancel  context.CancelFunc
	wg      sync.WaitGroup // background work (exit watchers, the reaper); Close waits for it
	pool    *poolRunner    // the warm pool's refills

	mu      sync.Mutex            // guards the fields below
	clients map[string]*agentConn // box id → connected agent client
	busy    map[string]int        // box id → calls in flight in this process
	touched map[string]time.Time  // box id → when this process last wrote its last_used_at (touchLazy)
}

// New returns a Manager. It does not touch boxes; call Reconcile for that.
func New(cfg Config) (*Manager, error) {
	if cfg.Home == "" || cfg.Store == nil {
		return nil, errors.New("sandbox: Config.Home and Config.Store are required")
	}
	if len(cfg.Engines) == 0 {
		return nil, errors.New("sandbox: no engines configured")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = 30 * time.Second
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 3 * time.Minute
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.SessionGrace <= 0 {
		cfg.SessionGrace = 3 * time.Minute
	}
	if cfg.ClientName == "" {
		cfg.ClientName = "boxlite-mcp"
	}
	if cfg.MaxMemoryMiB <= 0 {
		cfg.MaxMemoryMiB = defaultMaxMemory()
	}
	if cfg.HostCPUs <= 0 {
		cfg.HostCPUs = hostCPUs()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BootID == nil {
		cfg.BootID = proc.BootID
	}
	m := &Manager{
		cfg: cfg, store: cfg.Store, log: cfg.Logger.With("component", "manager"),
		engines: map[string]Engine{}, clients: map[string]*agentConn{}, busy: map[string]int{},
		touched: map[string]time.Time{},
	}
	for _, e := range cfg.Engines {
		m.engines[e.Name()] = e
		m.order = append(m.order, e.Name())
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if cfg.PoolInterval <= 0 {
		m.cfg.PoolInterval = defaultPoolInterval
	}
	m.pool = newPoolRunner(m.ctx, cfg.PoolConcurrency)
	for _, d := range []string{m.boxesDir(), m.locksDir(), m.runDir(), m.snapshotsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("sandbox: home %s: %w", cfg.Home, err)
		}
	}
	return m, nil
}

// Close stops background work, waits for it, and drops agent connections.
// Boxes keep running. The store may be closed once Close returns.
func (m *Manager) Close() {
	m.cancel()
	m.pool.wg.Wait()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ac := range m.clients {
		ac.c.Close()
		delete(m.clients, id)
	}
}

func (m *Manager) boxesDir() string { return filepath.Join(m.cfg.Home, "boxes") }
func (m *Manager) locksDir() string { return filepath.Join(m.cfg.Home, "locks") }
func (m *Manager) runDir() string   { return filepath.Join(m.cfg.Home, "run") }

// socketPath is where box id's agent socket lives. sun_path holds 108
// bytes: a home too deep for that gets its sockets under the temp dir.
func (m *Manager) socketPath(id string) string {
	p := filepath.Join(m.runDir(), id+".sock")
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(m.cfg.Home))
	return filepath.Join(os.TempDir(), "boxlite-"+hex.EncodeToString(sum[:6]), id+".sock")
}

// PickEngine resolves "auto" (or "") to the first usable engine, and checks a
// named one is configured and usable. The reason says why it was chosen.
func (m *Manager) PickEngine(ctx context.Context, name string) (Engine, string, error) {
	if name == "" || name == "auto" {
		var why []string
		for _, n := range m.order {
			a := m.engines[n].Available(ctx)
			if a.Usable {
				return m.engines[n], fmt.Sprintf("%s: %s", n, a.Reason), nil
			}
			why = append(why, fmt.Sprintf("%s: %s", n, a.Reason))
		}
		return nil, "", Errorf(ErrUnavailable, "no engine can run boxes on this host (%s)", joinSemi(why))
	}
	e, ok := m.engines[name]
	if !ok {
		return nil, "", Errorf(ErrInvalidArgument, "unknown engine %q; this server offers %s", name, joinComma(m.order))
	}
	if a := e.Available(ctx); !a.Usable {
		return nil, "", Errorf(ErrUnavailable, "engine %s is not usable on this host: %s", name, a.Reason)
	}
	return e, name + " (requested)", nil
}

// agentConn is a cached agent client and when it last worked.
type agentConn struct {
	c    *client.Client
	used atomic.Int64 // unix nanoseconds
}

func (a *agentConn) markUsed(t time.Time) { a.used.Store(t.UnixNano()) }
func (a *agentConn) lastUsed() time.Time  { return time.Unix(0, a.used.Load()) }

// Box is a box as the manager reports it.
type Box struct {
	ID           string
	Name         string
	Owner        string
	Engine       string
	Image        string
	Status       Status
	StatusReason string
	Spec         Spec
	CreatedAt    time.Time
	LastUsedAt   time.Time
	IdleTimeout  time.Duration
	ExpiresAt    time.Time
}

func toBox(r *persist.Box) *Box {
	b := &Box{ID: r.ID, Name: r.Name, Owner: r.Owner, Engine: r.Engine, Image: r.Image, Status: Status(r.Status),
		StatusReason: r.StatusReason, CreatedAt: r.CreatedAt, LastUsedAt: r.LastUsedAt, IdleTimeout: r.IdleTimeout, ExpiresAt: r.ExpiresAt}
	json.Unmarshal(r.Spec, &b.Spec)
	b.Spec.IDRange = r.IDRange
	return b
}

// CreateRequest describes a new box. Zero fields take defaults.
type CreateRequest struct {
	Name        string
	Image       string // default "default"
	Engine      string // "auto" (default), "jail", "qemu", "krun"
	CPUs        int    // default 1
	MemoryMiB   int    // default 512
	DiskMiB     int    // default DefaultDiskMiB
	Network     bool
	Env         map[string]string
	TTL         time.Duration // destroy after this long; 0: never
	IdleTimeout time.Duration // stop after this long unused; 0: server default
	// NetworkAllow limits the box to these destinations (implies Network).
	NetworkAllow []string
	// Progress, when set, follows an image pull during Create.
	Progress func(ImageProgress)
	// FromSnapshot makes the box from this snapshot (id, name or prefix).
	FromSnapshot string
	snapshot     *Snapshot // resolved by prepareClone
	remote       bool      // a Remote engine's box: Image is an OCI reference
}

func (r *CreateRequest) validate() error {
	if r.Name != "" && !names.Valid(r.Name) {
		return Errorf(ErrInvalidArgument, "name %q is not valid: use 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit", r.Name, names.MaxLen)
	}
	if r.Image == "" {
		r.Image = DefaultImage
	}
	if !r.remote && !names.Valid(r.Image) {
		return Errorf(ErrInvalidArgument, "image name %q is not valid", r.Image)
	}
	if r.CPUs == 0 {
		r.CPUs = DefaultCPUs
	}
	if r.CPUs < 1 || r.CPUs > MaxCPUs {
		return Errorf(ErrInvalidArgument, "cpus must be between 1 and %d (got %d)", MaxCPUs, r.CPUs)
	}
	if r.MemoryMiB == 0 {
		r.MemoryMiB = DefaultMemory
	}
	if r.MemoryMiB < MinMemoryMiB || r.MemoryMiB > MaxMemoryMiB {
		return Errorf(ErrInvalidArgument, "memory_mib must be between %d and %d (got %d)", MinMemoryMiB, MaxMemoryMiB, r.MemoryMiB)
	}
	if r.DiskMiB == 0 {
		r.DiskMiB = DefaultDiskMiB
	}
	if r.DiskMiB < MinDiskMiB || r.DiskMiB > MaxDiskMiB {
		return Errorf(ErrInvalidArgument, "disk_mib must be between %d and %d (got %d)", MinDiskMiB, MaxDiskMiB, r.DiskMiB)
	}
	policy, err := network.ParsePolicy(r.Network, r.NetworkAllow)
	if err != nil {
		return Wrapf(ErrInvalidArgument, err, "%v", err)
	}
	r.Network, r.NetworkAllow = policy.Enabled, policy.Entries()
	if len(r.Env) > MaxEnvEntries {
		return Errorf(ErrInvalidArgument, "at most %d environment variables", MaxEnvEntries)
	}
	for k := range r.Env {
		if !names.ValidEnvKey(k) {
			return Errorf(ErrInvalidArgument, "environment variable name %q is not valid", k)
		}
	}
	if r.TTL < 0 || r.IdleTimeout < 0 {
		return Errorf(ErrInvalidArgument, "ttl and idle timeout must not be negative")
	}
	return nil
}

// Create makes a box and starts it; it returns once the box's agent answered.
// A box that fails to start is removed again and the error says why.
func (m *Manager) Create(ctx context.Context, owner string, req CreateRequest) (*Box, error) {
	if owner == persist.PoolOwner {
		return nil, Errorf(ErrInvalidArgument, "a box needs an owner")
	}
	if req.FromSnapshot != "" {
		release, err := m.prepareClone(ctx, owner, &req)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	eng, why, err := m.PickEngine(ctx, req.Engine)
	if err != nil {
		return nil, err
	}
	var img *ResolvedImage
	remote, isRemote := eng.(Remote)
	if isRemote {
		// The engine's runtime pulls the image and applies its config.
		if req.FromSnapshot != "" {
			return nil, Errorf(ErrInvalidArgument, "engine %s has no snapshots", eng.Name())
		}
		ref, err := remote.ImageRef(req.Image)
		if err != nil {
			return nil, Wrapf(ErrInvalidArgument, err, "%v", err)
		}
		req.Image, req.remote = ref, true
		img = &ResolvedImage{Name: ref}
	} else if img, err = m.resolveImage(ctx, &req); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	if !isRemote && req.CPUs > m.cfg.HostCPUs {
		return nil, Errorf(ErrInvalidArgument, "cpus %d is more than this host has (%d); ask for at most %d", req.CPUs, m.cfg.HostCPUs, m.cfg.HostCPUs)
	}
	if req.FromSnapshot == "" { // a clone is never a pooled box
		if b, err := m.claim(ctx, owner, eng, &req, img); b != nil || err != nil {
			return b, err
		}
	}
	return m.create(ctx, owner, eng, why, req, img, nil)
}

// create records a box and starts it; pf, when set, makes it a pool fill.
func (m *Manager) create(ctx context.Context, owner string, eng Engine, why string, req CreateRequest, img *ResolvedImage, pf *poolFill) (*Box, error) {
	now := m.cfg.Now()
	row := &persist.Box{ID: persist.NewID(), Owner: owner, Name: req.Name, Engine: eng.Name(), Image: req.Image,
		Status: string(StatusCreating), CreatedAt: now, IdleTimeout: req.IdleTimeout}
	if req.TTL > 0 {
		row.ExpiresAt = now.Add(req.TTL)
	}
	spec := Spec{ID: row.ID, Name: req.Name, Owner: owner, Image: req.Image, CPUs: req.CPUs, MemoryMiB: req.MemoryMiB, DiskMiB: req.DiskMiB,
		Network: req.Network, NetworkAllow: req.NetworkAllow, Env: req.Env, BoxDir: filepath.Join(m.boxesDir(), row.ID), Socket: m.socketPath(row.ID)}
	img.apply(&spec)
	spec.RuntimeImageConfig = req.remote
	var need reclaim
	q, admit, final := persist.UsageQuery{Owner: owner, Live: liveStatuses, Reclaim: string(StatusPooled), Remote: m.remoteEngines()}, m.admitNew(owner, spec, &need), StatusRunning
	if pf != nil {
		spec.ImageID, q.Engine, admit, final = pf.imageID, eng.Name(), m.admitPool(spec, pf.target), StatusPooled
	}
	m.applyClone(&req, eng, &spec)
	row.Spec, _ = json.Marshal(spec)
	log := m.log.With("box_id", row.ID, "engine", eng.Name())

	// The lock is taken before the row exists, so a reconciling process
	// that sees the "creating" row waits for us instead of failing the box.
	lk, err := lockBox(ctx, m.locksDir(), row.ID)
	if err != nil {
		return nil, err
	}
	released := false
	defer func() {
		if !released {
			lk.unlock(false)
		}
	}()
	if err := m.store.InsertAdmitted(ctx, row, q, admit); err != nil {
		var e *Error
		if errors.As(err, &e) {
			released = true
			lk.unlock(true)
			return nil, err
		}
		released = true
		lk.unlock(true)
		if errors.Is(err, persist.ErrNameTaken) {
			return nil, Wrapf(ErrAlreadyExists, err, "%s; pick another name or destroy that box", trimClass(err))
		}
		if errors.Is(err, persist.ErrFull) {
			return nil, Wrapf(ErrResourceExhausted, err, "no space left on the server's disk to record a new box")
		}
		if errors.Is(err, persist.ErrNoIDRange) {
			return nil, Wrapf(ErrResourceExhausted, err, "this host holds as many boxes as it has id ranges (%d); destroy boxes you no longer need", persist.MaxIDRanges)
		}
		return nil, Wrapf(ErrInternal, err, "could not record the box")
	}
	spec.IDRange = row.IDRange
	if need != (reclaim{}) {
		m.reclaimPool(ctx, need) // the row holds its place: no refill takes it back
	}
	log.Info("creating box", "why_engine", why, "cpus", spec.CPUs, "memory_mib", spec.MemoryMiB)
	h, err := m.startLocked(ctx, eng, spec)
	if err == nil && pf != nil {
		err = m.warmUp(ctx, eng, spec, h)
	}
	// From here on the box process may exist whatever ctx says: what
	// follows is bookkeeping of a side effect.
	bctx, cancel := background(ctx, time.Minute)
	defer cancel()
	if err != nil {
		// Nothing of a box that never started survives: release what the
		// engine made and drop the row.
		derr := eng.Destroy(bctx, spec, h)
		if derr == nil {
			derr = m.store.Delete(bctx, row.ID)
		} else if _, terr := m.transition(bctx, row.ID, StatusFailed, "start failed and cleanup failed: "+derr.Error(), nil); terr != nil {
			derr = errors.Join(derr, terr)
		}
		log.Warn("box failed to start", "err", err, "cleanup_err", derr)
		released = true
		lk.unlock(derr == nil)
		return nil, startError(err)
	}
	r, err := m.setLive(bctx, row.ID, final, h)
	if err != nil {
		// The box runs but is not recorded as running: do not leave it so.
		derr := eng.Destroy(bctx, spec, h)
		if derr == nil {
			derr = m.store.Delete(bctx, row.ID)
		}
		log.Warn("box started but could not be recorded; removed it", "err", err, "cleanup_err", derr)
		released = true
		lk.unlock(derr == nil)
		return nil, err
	}
	m.watch(row.ID, eng, spec, h)
	log.Info("box " + string(final))
	return toBox(r), nil
}

// startError gives a failed engine start its class and public message.
func startError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Wrapf(ErrDeadlineExceeded, err, "box did not start in time")
	}
	return Wrapf(ErrUnavailable, err, "box failed to start")
}

// startLocked starts a box with the start timeout. The caller holds the lock.
func (m *Manager) startLocked(ctx context.Context, eng Engine, spec Spec) (Handle, error) {
	if err := os.MkdirAll(spec.BoxDir, 0o700); err != nil {
		return Handle{}, Wrapf(ErrResourceExhausted, err, "cannot create the box directory")
	}
	if err := os.MkdirAll(filepath.Dir(spec.Socket), 0o700); err != nil {
		return Handle{}, Wrapf(ErrInternal, err, "cannot create the socket directory")
	}
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer cancel()
	h, err := eng.Start(sctx, spec)
	if err == nil {
		// Persisted next to the box too, so leftovers can be found and
		// killed even if the row is lost.
		if werr := writeFileAtomic(filepath.Join(spec.BoxDir, engineStateFile), mustJSON(h)); werr != nil {
			return h, Wrapf(ErrResourceExhausted, werr, "cannot record the box's state")
		}
	}
	return h, err
}

// Get resolves ref (id, name or unique id prefix) among owner's boxes.
func (m *Manager) Get(ctx context.Context, owner, ref string) (*Box, error) {
	r, err := m.resolve(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	return toBox(r), nil
}

func (m *Manager) resolve(ctx context.Context, owner, ref string) (*persist.Box, error) {
	if owner == persist.PoolOwner {
		// The pool's boxes belong to nobody: no caller reaches them.
		return nil, Errorf(ErrNotFound, "no box matches %q; list_boxes shows the boxes you have", ref)
	}
	r, err := m.store.Resolve(ctx, owner, ref)
	if errors.Is(err, persist.ErrNotFound) && len(m.remoteEngines()) > 0 {
		// Perhaps made through another server sharing a cluster.
		m.syncRemote(ctx, owner)
		r, err = m.store.Resolve(ctx, owner, ref)
	}
	switch {
	case errors.Is(err, persist.ErrNotFound):
		return nil, Wrapf(ErrNotFound, err, "no box matches %q; list_boxes shows the boxes you have", ref)
	case errors.Is(err, persist.ErrAmbiguous):
		return nil, Wrapf(ErrInvalidArgument, err, "%s", trimClass(err))
	case err != nil:
		return nil, Wrapf(ErrInternal, err, "could not look up box %q", ref)
	}
	return r, nil
}

// trimClass drops the trailing ": <class>" that persist errors carry.
func trimClass(err error) string {
	s := err.Error()
	for _, c := range []error{persist.ErrNameTaken, persist.ErrAmbiguous, persist.ErrNotFound} {
		if suffix := ": " + c.Error(); len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
			return s[:len(s)-len(suffix)]
		}
	}
	return s
}

// List returns owner's boxes, optionally only those with status.
func (m *Manager) List(ctx context.Context, owner string, status Status) ([]*Box, error) {
	if status != "" && !status.Valid() {
		return nil, Errorf(ErrInvalidArgument, "unknown status %q", status)
	}
	if owner == persist.PoolOwner {
		return []*Box{}, nil // nobody's boxes (the pool's) are nobody's to list; AllBoxes lists every box
	}
	m.syncRemote(ctx, owner)
	rows, err := m.store.List(ctx, persist.Filter{Owner: owner, Status: string(status)})
	if err != nil {
		return nil, Wrapf(ErrInternal, err, "could not list boxes")
	}
	out := make([]*Box, 0, len(rows))
	for _, r := range rows {
		out = append(out, toBox(r))
	}
	return out, nil
}

// AllBoxes returns every box of every owner (for administration).
func (m *Manager) AllBoxes(ctx context.Context) ([]*Box, error) {
	rows, err := m.store.List(ctx, persist.Filter{})
	if err != nil {
		return nil, Wrapf(ErrInternal, err, "could not list boxes")
	}
	out := make([]*Box, 0, len(rows))
	for _, r := range rows {
		out = append(out, toBox(r))
	}
	return out, nil
}

// lockRow takes box id's lock and reads its row under it (the box may have
// been destroyed while the caller waited: then ErrNotFound, lock released).
func (m *Manager) lockRow(ctx context.Context, id string) (*boxLock, *persist.Box, error) {
	lk, err := lockBox(ctx, m.locksDir(), id)
	if err != nil {
		return nil, nil, err
	}
	r, err := m.store.Get(ctx, id)
	if err != nil {
		lk.unlock(false)
		return nil, nil, Wrapf(ErrNotFound, err, "box %s no longer exists", id)
	}
	return lk, r, nil
}

// Stop shuts a box down; its files survive and the next call starts it
// again. Stopping a stopped box is a no-op.
func (m *Manager) Stop(ctx context.Context, owner, ref string) (*Box, error) {
	r, err := m.resolve(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	return m.stop(ctx, r.ID, "stopped on request")
}

func (m *Manager) stop(ctx context.Context, id, reason string) (*Box, error) {
	lk, r, err := m.lockRow(ctx, id)
	if err != nil {
		return nil, err
	}
	defer lk.unlock(false)
	switch Status(r.Status) {
	case StatusStopped, StatusFailed:
		return toBox(r), nil
	}
	// Under the lock, creating or starting means the server doing it is
	// gone (a live one holds the lock for the whole start): stopping kills
	// whatever that start left, like any stop.
	if err := requireStatus(id, "stop", Status(r.Status), append(canReach(StatusStopping), StatusStopping)...); err != nil {
		return nil, err
	}
	eng, spec, h, err := m.engineFor(r)
	if err != nil {
		return nil, err
	}
	if re, ok := eng.(Remote); ok && !re.CanStop() {
		return nil, Errorf(ErrFailedPrecondition, "box %s runs on engine %s, whose boxes cannot be stopped here (a stopped pod loses its files; the server needs --k8s-storage-class for that): destroy it instead", id, eng.Name())
	}
	// The stop goes on if the caller leaves: a half-stopped box helps no one.
	sctx, cancel := background(ctx, m.cfg.StopGrace+30*time.Second)
	defer cancel()
	if _, err := m.transition(sctx, id, StatusStopping, reason, nil); err != nil {
		return nil, err
	}
	m.dropClient(id)
	if err := eng.Stop(sctx, spec, h, m.cfg.StopGrace); err != nil {
		_, terr := m.transition(sctx, id, StatusFailed, "stop failed: "+PublicMessage(err), nil)
		return nil, Wrapf(ErrInternal, errors.Join(err, terr), "box %s did not stop cleanly; try again or destroy it", id)
	}
	r, err = m.transition(sctx, id, StatusStopped, reason, nil)
	if err != nil {
		return nil, err
	}
	m.log.Info("box stopped", "box_id", id, "reason", reason)
	return toBox(r), nil
}

// Destroy kills a box and removes everything it had: processes, mounts,
// sockets, files, and finally its row. Destroying a box that is already
// gone is ErrNotFound.
func (m *Manager) Destroy(ctx context.Context, owner, ref string) (*Box, error) {
	r, err := m.resolve(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	return m.destroy(ctx, r.ID, "destroyed on request")
}

func (m *Manager) destroy(ctx context.Context, id, reason string) (*Box, error) {
	lk, r, err := m.lockRow(ctx, id)
	if err != nil {
		return nil, err
	}
	removed := false
	defer func() { lk.unlock(removed) }()
	// Teardown must finish even if the caller goes away.
	dctx, cancel := background(ctx, 2*time.Minute)
	defer cancel()
	eng, spec, h, err := m.engineFor(r)
	if err != nil {
		return nil, err // no engine here to kill its process: leave the box alone
	}
	if _, err := m.transition(dctx, id, StatusDestroying, reason, nil); err != nil {
		return nil, err
	}
	m.dropClient(id)
	if err := eng.Destroy(dctx, spec, h); err != nil {
		if _, terr := m.transition(dctx, id, StatusDestroying, "destroy incomplete, will retry: "+PublicMessage(err), nil); terr != nil {
			err = errors.Join(err, terr)
		}
		return nil, Wrapf(ErrInternal, err, "box %s could not be fully destroyed; try again", id)
	}
	os.RemoveAll(spec.BoxDir) // engines remove it; this catches a box that never started
	if err := m.store.Delete(dctx, id); err != nil && !errors.Is(err, persist.ErrNotFound) {
		return nil, Wrapf(ErrInternal, err, "box %s: resources freed but the record could not be deleted", id)
	}
	removed = true
	m.log.Info("box destroyed", "box_id", id, "reason", reason)
	b := toBox(r)
	b.Status = StatusDestroying
	return b, nil
}

// engineFor returns the engine, spec and handle of a stored box.
func (m *Manager) engineFor(r *persist.Box) (Engine, Spec, Handle, error) {
	b := toBox(r)
	eng, ok := m.engines[r.Engine]
	if !ok {
		return nil, b.Spec, Handle{}, Errorf(ErrUnavailable, "box %s runs on engine %s, which this server cannot run (it offers %s); use a server that has engine %s", r.ID, r.Engine, joinComma(m.order), r.Engine)
	}
	var h Handle
	if len(r.EngineState) > 0 {
		if err := json.Unmarshal(r.EngineState, &h); err != nil {
			return nil, b.Spec, Handle{}, Wrapf(ErrInternal, err, "box %s has an unreadable engine state", r.ID)
		}
	}
	return eng, b.Spec, h, nil
}

func (m *Manager) dropClient(id string) {
	m.mu.Lock()
	ac := m.clients[id]
	delete(m.clients, id)
	m.mu.Unlock()
	if ac != nil {
		ac.c.Close()
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// writeFileAtomic writes data to path through a temp file and a rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func joinSemi(s []string) string  { return strings.Join(s, "; ") }
func joinComma(s []string) string { return strings.Join(s, ", ") }
