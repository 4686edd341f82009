package sandbox

// The warm pool: booted, pre-warmed boxes of the default shape per engine,
// recorded as registry rows owned by nobody (persist.PoolOwner) in status
// pooled. create_box of the default shape claims one in one transaction
// (persist.Store.Claim) instead of starting a box; every server on the
// home shares the pool, and any of them may claim from it. A server with
// Config.Pools refills it in the background, a few boxes at a time; the
// fill of each engine is admitted in the same transaction as the insert,
// against the pool's target and the home's limits, so two servers never
// overfill it. Pooled boxes record the identity of the image build they
// were started from (Spec.ImageID): a claim takes only boxes of the current
// build, and a refill pass destroys the others.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// DefaultSession is the interpreter session run_code uses when none is
// named (tools.DefaultSession): the one a pooled box has started.
const DefaultSession = "default"

// Pool defaults.
const (
	defaultPoolConcurrency = 2
	defaultPoolInterval    = 2 * time.Second
	// poolBackoffMax bounds the pause after failed refills.
	poolBackoffMax = time.Minute
	// warmTimeout bounds a pooled box's warm-up (an interpreter's first
	// start is slow under emulation).
	warmTimeout = 3 * time.Minute
)

// poolRunner is the refill state of one Manager.
type poolRunner struct {
	ctx    context.Context // cancelled by DrainPool and Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the refill loop and its fills
	kick   chan struct{}  // a claim happened: refill now
	sem    chan struct{}  // bounds fills in flight

	mu       sync.Mutex
	inflight map[string]int       // engine → fills in flight in this process
	fails    map[string]int       // engine → refills failed in a row
	until    map[string]time.Time // engine → no refill before this (backoff)
	warm     func(context.Context, *client.Client) error
}

func newPoolRunner(ctx context.Context, concurrency int) *poolRunner {
	if concurrency <= 0 {
		concurrency = defaultPoolConcurrency
	}
	p := &poolRunner{kick: make(chan struct{}, 1), sem: make(chan struct{}, concurrency),
		inflight: map[string]int{}, fails: map[string]int{}, until: map[string]time.Time{}, warm: warmBox}
	p.ctx, p.cancel = context.WithCancel(ctx)
	return p
}

// poolShape reports whether a validated request (and its resolved image)
// is the shape pooled boxes have: the default image as it is, default
// CPUs, memory and disk, no network.
func poolShape(req *CreateRequest, img *ResolvedImage) bool {
	return req.Image == DefaultImage && req.CPUs == DefaultCPUs && req.MemoryMiB == DefaultMemory && req.DiskMiB == DefaultDiskMiB &&
		!req.Network && len(req.NetworkAllow) == 0 &&
		img.Reference == "" && len(img.Env) == 0 && img.WorkDir == "" && img.UID == nil && img.GID == nil
}

// imageIdentity is the identity of the current build of image name.
func (m *Manager) imageIdentity(name string) (string, error) {
	return image.Identity(m.cfg.Home, name)
}

// claim hands owner a pooled box for req on eng, or returns (nil, nil) when
// the request is not of the pooled shape or no pooled box is ready: the
// caller then starts a box cold. The claim is one transaction (admission
// of the owner's box count, name, TTL, idle timeout and env included).
func (m *Manager) claim(ctx context.Context, owner string, eng Engine, req *CreateRequest, img *ResolvedImage) (*Box, error) {
	if !poolShape(req, img) {
		return nil, nil
	}
	imageID, err := m.imageIdentity(req.Image)
	if err != nil {
		return nil, nil // the cold start reports what is wrong with the image
	}
	now := m.cfg.Now()
	sel := persist.PoolSelect{Status: string(StatusPooled), Engine: eng.Name(), Image: req.Image, ImageID: imageID}
	r, err := m.store.Claim(ctx, sel, persist.UsageQuery{Owner: owner, Live: liveStatuses, Remote: m.remoteEngines()}, func(b *persist.Box, u persist.Usage) error {
		if !CanTransition(StatusPooled, StatusRunning) {
			return Errorf(ErrInternal, "pooled boxes cannot be claimed")
		}
		if m.cfg.OwnerMaxBoxes > 0 && u.OwnerBoxes >= m.cfg.OwnerMaxBoxes {
			return Errorf(ErrResourceExhausted, "you have %d boxes, the most one owner may have here; destroy boxes you no longer need (list_boxes shows them)", u.OwnerBoxes)
		}
		var spec Spec
		if err := json.Unmarshal(b.Spec, &spec); err != nil {
			return fmt.Errorf("pooled box %s: spec: %w", b.ID, err)
		}
		spec.Name = req.Name
		if len(req.Env) > 0 {
			spec.Env = maps.Clone(req.Env)
			spec.ClaimEnv = maps.Clone(req.Env)
		}
		b.Spec = mustJSON(spec)
		b.Owner, b.Name, b.Status, b.StatusReason = owner, req.Name, string(StatusRunning), ""
		b.CreatedAt, b.LastUsedAt, b.IdleTimeout = now, now, req.IdleTimeout
		if req.TTL > 0 {
			b.ExpiresAt = now.Add(req.TTL)
		}
		return nil
	})
	var e *Error
	switch {
	case err == nil:
	case errors.As(err, &e):
		return nil, err
	case errors.Is(err, persist.ErrNotFound):
		return nil, nil
	case errors.Is(err, persist.ErrNameTaken):
		return nil, Wrapf(ErrAlreadyExists, err, "%s; pick another name or destroy that box", trimClass(err))
	default:
		m.log.Warn("claiming a pooled box failed; starting one cold", "engine", eng.Name(), "err", err)
		return nil, nil
	}
	m.kickPool()
	m.log.Info("box claimed from the warm pool", "box_id", r.ID, "engine", eng.Name())
	return toBox(r), nil
}

// admitPool checks one more pooled box of spec on its engine: the pool
// below target, the home's box count and memory (pooled boxes count like
// any box).
func (m *Manager) admitPool(spec Spec, target int) func(persist.Usage) error {
	return func(u persist.Usage) error {
		if u.OwnerEngineLive >= target {
			return errPoolFull
		}
		if m.cfg.MaxBoxes > 0 && u.Boxes >= m.cfg.MaxBoxes {
			return Errorf(ErrResourceExhausted, "the pool cannot grow: this server holds its limit of %d boxes", m.cfg.MaxBoxes)
		}
		return m.admitMemory(spec, u)
	}
}

// errPoolFull: another fill (of any server) reached the pool's target first.
var errPoolFull = Errorf(ErrResourceExhausted, "the pool is full")

// StartPool keeps Config.Pools filled in the background until DrainPool or
// Close. Call it after Reconcile.
func (m *Manager) StartPool() {
	if len(m.cfg.Pools) == 0 {
		return
	}
	for _, engine := range m.poolEngines() {
		if err := m.store.SetPoolTarget(m.pool.ctx, engine, m.cfg.Pools[engine]); err != nil {
			m.log.Warn("recording the pool's target", "engine", engine, "err", err)
		}
	}
	p := m.pool
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(m.cfg.PoolInterval)
		defer t.Stop()
		for {
			m.poolPass(p.ctx)
			select {
			case <-p.ctx.Done():
				return
			case <-t.C:
			case <-p.kick:
			}
		}
	}()
}

// poolEngines are the engines of Config.Pools this server has, sorted.
func (m *Manager) poolEngines() []string {
	var out []string
	for e, n := range m.cfg.Pools {
		if _, ok := m.engines[e]; ok && n > 0 {
			out = append(out, e)
		}
	}
	sort.Strings(out)
	return out
}

// kickPool asks for a refill pass claimRefillDelay after a claim.
func (m *Manager) kickPool() {
	time.AfterFunc(claimRefillDelay, func() {
		select {
		case m.pool.kick <- struct{}{}:
		default:
		}
	})
}

// claimRefillDelay is how long after a claim its refill starts: a box
// start and its interpreters' warm-up take the CPU for a second or more,
// and right after a claim the CPU is wanted by the claimant's first calls,
// the reason it claimed (the first print(1) took twice as long on two
// cores when the refill started at once).
const claimRefillDelay = time.Second

// poolPass removes pooled boxes that can no longer be handed out (an older
// image build, a dead process) and starts fills up to each pool's target.
func (m *Manager) poolPass(ctx context.Context) {
	imageID, ierr := m.imageIdentity(DefaultImage)
	rows, err := m.store.PoolBoxes(ctx)
	if err != nil {
		m.log.Warn("pool: listing pooled boxes", "err", err)
		return
	}
	fill := map[string]int{}
	for _, r := range rows {
		if _, ok := m.engines[r.Engine]; !ok {
			continue
		}
		var spec Spec
		json.Unmarshal(r.Spec, &spec)
		switch st := Status(r.Status); {
		case st == StatusPooled && ierr == nil && spec.ImageID != imageID:
			m.destroyPooled(ctx, r.ID, "its image was rebuilt")
		case st == StatusStopped || st == StatusFailed:
			m.destroyPooled(ctx, r.ID, "its process ended")
		case st == StatusPooled || st == StatusCreating:
			fill[r.Engine]++
		}
	}
	for _, engine := range m.poolEngines() {
		if ierr != nil {
			m.poolResult(engine, Wrapf(ErrFailedPrecondition, ierr, "the default image is not usable: %v", ierr))
			continue
		}
		m.pool.mu.Lock()
		n := m.cfg.Pools[engine] - max(fill[engine], m.pool.inflight[engine])
		wait := time.Now().Before(m.pool.until[engine])
		m.pool.mu.Unlock()
		for ; n > 0 && !wait; n-- {
			select {
			case m.pool.sem <- struct{}{}:
			default:
				n = 0 // every fill slot is busy; the next pass goes on
				continue
			}
			m.pool.mu.Lock()
			m.pool.inflight[engine]++
			m.pool.mu.Unlock()
			m.pool.wg.Add(1)
			go func() {
				defer m.pool.wg.Done()
				err := m.fillOne(m.pool.ctx, engine, imageID)
				m.pool.mu.Lock()
				m.pool.inflight[engine]--
				m.pool.mu.Unlock()
				<-m.pool.sem
				if !errors.Is(err, errPoolFull) && m.pool.ctx.Err() == nil {
					m.poolResult(engine, err)
				}
			}()
		}
	}
}

// poolResult records a refill's outcome for doctor and backs off after failures.
func (m *Manager) poolResult(engine string, err error) {
	p := m.pool
	p.mu.Lock()
	if err == nil {
		p.fails[engine] = 0
		delete(p.until, engine)
	} else {
		p.fails[engine]++
		p.until[engine] = time.Now().Add(min(m.cfg.PoolInterval<<min(p.fails[engine], 8), poolBackoffMax))
	}
	p.mu.Unlock()
	msg := ""
	if err != nil {
		msg = PublicMessage(err)
		m.log.Warn("pool: refill failed", "engine", engine, "err", err)
	}
	ctx, cancel := background(p.ctx, bookkeeping)
	defer cancel()
	if serr := m.store.SetPoolError(ctx, engine, msg); serr != nil {
		m.log.Warn("pool: recording a refill", "engine", engine, "err", serr)
	}
}

// fillOne starts one pooled box on engine.
func (m *Manager) fillOne(ctx context.Context, engine, imageID string) error {
	req := CreateRequest{}
	if err := req.validate(); err != nil {
		return err
	}
	_, err := m.create(ctx, persist.PoolOwner, m.engines[engine], "warm pool", req, &ResolvedImage{Name: req.Image},
		&poolFill{target: m.cfg.Pools[engine], imageID: imageID})
	return err
}

// poolFill makes create fill a pool: admitted against the pool's target,
// warmed up after the start, recorded as pooled.
type poolFill struct {
	target  int
	imageID string
}

// warmUp pre-warms a started pooled box over its own connection, closed
// afterwards (an exclusive channel must be free for the claimer).
func (m *Manager) warmUp(ctx context.Context, eng Engine, spec Spec, h Handle) error {
	wctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	c, err := m.connect(wctx, eng, spec, h)
	if err != nil {
		return Wrapf(ErrUnavailable, err, "the pooled box's agent did not answer")
	}
	defer c.Close()
	if err := m.pool.warm(wctx, c); err != nil {
		return Wrapf(ErrUnavailable, err, "warming up a pooled box failed")
	}
	return nil
}

// warmBox runs Python and Node once (their files come into the page cache,
// their caches are written) and starts the default Python session.
func warmBox(ctx context.Context, c *client.Client) error {
	for _, argv := range [][]string{{"python3", "-c", "pass"}, {"node", "-e", "0"}} {
		res, err := c.Exec(ctx, wire.ExecRequest{Argv: argv, Cwd: DefaultWorkDir, TimeoutMs: warmTimeout.Milliseconds()}, client.ExecIO{})
		if err != nil {
			return fmt.Errorf("%s: %w", argv[0], err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("%s exited with %d", argv[0], res.ExitCode)
		}
	}
	if !c.SupportsSessions() {
		return nil
	}
	res, err := c.RunSession(ctx, wire.SessionRequest{Name: DefaultSession, Language: wire.LangPython, StartCwd: DefaultWorkDir,
		TimeoutMs: warmTimeout.Milliseconds()}, "None", client.SessionIO{})
	if err != nil {
		return fmt.Errorf("python session: %w", err)
	}
	if res.Error != nil {
		return fmt.Errorf("python session: %s: %s", res.Error.Name, res.Error.Message)
	}
	return nil
}

// destroyPooled destroys box id if it is still a pooled box (owned by
// nobody): the move to destroying is conditional, so a box claimed
// meanwhile is left alone. It reports whether the box was destroyed.
func (m *Manager) destroyPooled(ctx context.Context, id, reason string) bool {
	lk, r, err := m.lockRow(ctx, id)
	if err != nil {
		return false
	}
	if r.Owner != persist.PoolOwner {
		lk.unlock(false)
		return false
	}
	_, err = m.store.Update(ctx, id, func(b *persist.Box) error {
		if b.Owner != persist.PoolOwner {
			return errClaimed
		}
		if Status(b.Status) != StatusDestroying && !CanTransition(Status(b.Status), StatusDestroying) {
			return errClaimed
		}
		b.Status, b.StatusReason = string(StatusDestroying), reason
		return nil
	})
	lk.unlock(false)
	if err != nil {
		return false
	}
	if _, err := m.destroy(ctx, id, "pooled box: "+reason); err != nil {
		m.log.Warn("pool: destroying a pooled box", "box_id", id, "err", err)
		return false
	}
	return true
}

var errClaimed = errors.New("claimed meanwhile")

// DrainPool stops refilling and destroys every pooled box of this server's
// engines (serve --stop-boxes-on-exit). It returns how many it destroyed.
func (m *Manager) DrainPool(ctx context.Context) int {
	m.pool.cancel()
	m.pool.wg.Wait()
	rows, err := m.store.PoolBoxes(ctx)
	if err != nil {
		m.log.Warn("pool: draining", "err", err)
		return 0
	}
	n := 0
	for _, r := range rows {
		if _, ok := m.engines[r.Engine]; ok && m.destroyPooled(ctx, r.ID, "pool drained") {
			n++
		}
	}
	return n
}

// PoolBoxes lists the pooled boxes (doctor, tests).
func (m *Manager) PoolBoxes(ctx context.Context) ([]*Box, error) {
	rows, err := m.store.PoolBoxes(ctx)
	if err != nil {
		return nil, Wrapf(ErrInternal, err, "could not list pooled boxes")
	}
	out := make([]*Box, 0, len(rows))
	for _, r := range rows {
		out = append(out, toBox(r))
	}
	return out, nil
}

// reclaimPool destroys the oldest ready pooled boxes of this server's
// engines until need is met: room for a box an owner asked for, admitted
// on the understanding that the pool gives it up.
func (m *Manager) reclaimPool(ctx context.Context, need reclaim) {
	rows, err := m.store.PoolBoxes(ctx)
	if err != nil {
		m.log.Warn("pool: making room", "err", err)
		return
	}
	for _, r := range rows {
		if need.boxes <= 0 && need.memMiB <= 0 {
			return
		}
		if _, ok := m.engines[r.Engine]; !ok || Status(r.Status) != StatusPooled {
			continue
		}
		if m.destroyPooled(ctx, r.ID, "made room for an owner's box") {
			need.boxes--
			need.memMiB -= int64(toBox(r).Spec.MemoryMiB)
		}
	}
}
