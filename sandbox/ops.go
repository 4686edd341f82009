package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// dialTimeout bounds connecting to a running box's agent.
const dialTimeout = 10 * time.Second

// staleAfter is how long a cached agent connection may sit unused before
// it is pinged ahead of the next call: a box may have died meanwhile, and a
// call must not be sent into a dead connection (it could not be retried
// safely).
const staleAfter = 250 * time.Millisecond

// touchEvery refreshes last_used_at during long calls so the reaper
// (of any server process) never stops a box in use.
const touchEvery = 30 * time.Second

// ensureRunning returns a connected client for box id, starting the box
// first if it is stopped or failed, and noticing a box whose process died.
func (m *Manager) ensureRunning(ctx context.Context, id string) (*client.Client, error) {
	if c := m.cachedClient(ctx, id); c != nil {
		return c, nil
	}
	lk, err := lockBox(ctx, m.locksDir(), id)
	if err != nil {
		return nil, err
	}
	defer lk.unlock(false)
	// Re-check: another goroutine may have connected while we waited.
	if c := m.cachedClient(ctx, id); c != nil {
		return c, nil
	}
	r, err := m.store.Get(ctx, id)
	if err != nil {
		return nil, Wrapf(ErrNotFound, err, "box %s no longer exists", id)
	}
	eng, spec, h, err := m.engineFor(r)
	if err != nil {
		return nil, err
	}
	log := m.log.With("box_id", id, "engine", eng.Name())
	switch st := Status(r.Status); st {
	case StatusDestroying:
		return nil, Errorf(ErrFailedPrecondition, "box %s is being destroyed", id)
	case StatusRunning, StatusCreating, StatusStarting, StatusStopping:
		// Under the lock, a transitional status means the server doing
		// that transition died. Whatever the status, ask the engine.
		c, err := m.connect(ctx, eng, spec, h)
		if err == nil {
			if st != StatusRunning {
				bctx, cancel := background(ctx, bookkeeping)
				_, terr := m.setRunning(bctx, id, h)
				cancel()
				if terr != nil {
					c.Close()
					return nil, terr
				}
				m.watch(id, eng, spec, h)
			}
			return m.keepClient(id, c), nil
		}
		rerr := eng.Recover(ctx, spec, h)
		if rerr == nil {
			return nil, Wrapf(ErrUnavailable, err, "box %s is running but its agent does not answer; try again or destroy it", id)
		}
		reason := "box process exited"
		if !errors.Is(rerr, ErrNotRunning) {
			reason = "box process lost"
		}
		log.Warn("box found dead; restarting", "reason", reason, "recover_err", rerr, "dial_err", err)
		bctx, cancel := background(ctx, bookkeeping)
		_, serr := m.settleDead(bctx, r, eng, spec, h, reason)
		cancel()
		if serr != nil {
			return nil, serr
		}
	case StatusStopped, StatusFailed:
	default:
		return nil, Errorf(ErrInternal, "box %s has unknown status %q", id, r.Status)
	}

	// Whatever the recorded handle still names (a stop that failed, a
	// crashed start) is killed first: two processes must never share the
	// box's disk.
	if err := eng.Stop(ctx, spec, h, 0); err != nil {
		return nil, Wrapf(ErrUnavailable, err, "box %s: a leftover of its previous run could not be stopped; try again or destroy it", id)
	}
	if err := m.transitionStarting(ctx, id, spec); err != nil {
		return nil, err
	}
	log.Info("starting box")
	h, err = m.startLocked(ctx, eng, spec)
	bctx, cancel := background(ctx, time.Minute)
	defer cancel()
	if err != nil {
		// Kill what the failed start left; keep the box's files.
		stopErr := eng.Stop(bctx, spec, h, 0)
		if _, terr := m.transition(bctx, id, StatusFailed, "start failed: "+PublicMessage(err), nil); terr != nil {
			stopErr = errors.Join(stopErr, terr)
		}
		log.Warn("box failed to start", "err", err, "cleanup_err", stopErr)
		return nil, startError(err)
	}
	if _, err := m.setRunning(bctx, id, h); err != nil {
		stopErr := eng.Stop(bctx, spec, h, 0)
		log.Warn("box started but could not be recorded; stopped it", "err", err, "cleanup_err", stopErr)
		return nil, err
	}
	m.watch(id, eng, spec, h)
	c, err := m.connect(ctx, eng, spec, h)
	if err != nil {
		return nil, Wrapf(ErrUnavailable, err, "box %s started but its agent does not answer", id)
	}
	return m.keepClient(id, c), nil
}

func (m *Manager) connect(ctx context.Context, eng Engine, spec Spec, h Handle) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := eng.Dial(dctx, spec, h)
	if err != nil {
		return nil, err
	}
	return client.New(dctx, conn, m.cfg.ClientName)
}

func (m *Manager) keepClient(id string, c *client.Client) *client.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.clients[id]; old != nil && old.c != c {
		old.c.Close()
	}
	ac := &agentConn{c: c}
	ac.markUsed(m.cfg.Now())
	m.clients[id] = ac
	return c
}

// cachedClient returns the live cached client of box id, or nil. A client
// unused for staleAfter is pinged first; one that fails is dropped.
func (m *Manager) cachedClient(ctx context.Context, id string) *client.Client {
	m.mu.Lock()
	ac := m.clients[id]
	m.mu.Unlock()
	if ac == nil {
		return nil
	}
	if !ac.c.Closed() && m.cfg.Now().Sub(ac.lastUsed()) < staleAfter {
		ac.markUsed(m.cfg.Now())
		return ac.c
	}
	if !ac.c.Closed() {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ac.c.Ping(pctx)
		cancel()
		if err == nil {
			ac.markUsed(m.cfg.Now())
			return ac.c
		}
	}
	m.mu.Lock()
	if m.clients[id] == ac {
		delete(m.clients, id)
	}
	m.mu.Unlock()
	ac.c.Close()
	return nil
}

// withAgent resolves ref, makes sure the box runs, and runs fn with its
// agent client, keeping the box marked as used meanwhile. A connection that
// breaks during fn is checked: if the box process died, the box is marked
// stopped and the error says so.
func (m *Manager) withAgent(ctx context.Context, owner, ref string, fn func(*client.Client) error) (*Box, error) {
	r, err := m.resolve(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	return m.withAgentOn(ctx, r, fn)
}

// withAgentOn is withAgent on a box already resolved (for its owner).
func (m *Manager) withAgentOn(ctx context.Context, r *persist.Box, fn func(*client.Client) error) (*Box, error) {
	id := r.ID
	c, err := m.ensureRunning(ctx, id)
	if err != nil {
		return nil, err
	}
	m.setBusy(id, 1)
	defer func() {
		if m.setBusy(id, -1) == 0 && m.exclusive(r) {
			m.dropClient(id) // let other servers in between calls
		}
	}()
	m.touchLazy(r)
	stop := m.touchWhile(id)
	err = fn(c)
	stop()
	m.markUsed(id)
	m.touchLazy(r)
	if err == nil {
		return toBox(r), nil
	}
	return toBox(r), m.callError(ctx, id, c, err)
}

// callError classifies an error from an agent call.
func (m *Manager) callError(ctx context.Context, id string, c *client.Client, err error) error {
	var werr *wire.Error
	var classified *Error
	switch {
	case errors.As(err, &classified) && !errors.Is(err, errNoAnswer):
		return err // the call said what it was
	case errors.As(err, &werr):
		if werr.Code == wire.CodeNotFound {
			err = fmt.Errorf("%w: %w", ErrNotInBox, err)
		}
		return Wrapf(agentClass(werr.Code), err, "%s", werr.Message)
	case errors.Is(err, errNoAnswer):
		m.dropClient(id)
		return Wrapf(ErrDeadlineExceeded, err, "the box did not answer in time (is it frozen or overloaded?); try again, or destroy it")
	case errors.Is(err, context.Canceled):
		return Wrapf(ErrDeadlineExceeded, err, "call cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return Wrapf(ErrDeadlineExceeded, err, "call timed out")
	case errors.Is(err, client.ErrDisconnected):
		m.dropClient(id)
		reason := m.checkDead(ctx, id)
		if reason != "" {
			return Wrapf(ErrUnavailable, err, "the box stopped during the call (%s); call again to restart it", reason)
		}
		return Wrapf(ErrUnavailable, err, "lost the connection to the box's agent; call again")
	}
	return Wrapf(ErrInternal, err, "agent call failed")
}

// checkDead looks at a box whose connection broke. If its process is gone
// (the connection can break a moment before the dying process leaves the
// process table, so it waits up to deathGrace for the exit) it records the
// exit and returns the reason; else "".
func (m *Manager) checkDead(ctx context.Context, id string) string {
	cctx, cancel := background(ctx, bookkeeping)
	defer cancel()
	lk, err := lockBox(cctx, m.locksDir(), id)
	if err != nil {
		return ""
	}
	defer lk.unlock(false)
	r, err := m.store.Get(cctx, id)
	if err != nil {
		return ""
	}
	if Status(r.Status) != StatusRunning {
		return r.StatusReason // the exit watcher (or another server) recorded it already
	}
	eng, spec, h, err := m.engineFor(r)
	if err != nil {
		return ""
	}
	wctx, wcancel := context.WithTimeout(cctx, deathGrace)
	werr := eng.Wait(wctx, spec, h)
	wcancel()
	if werr != nil {
		return ""
	}
	reason := "box process exited"
	if _, err := m.settleDead(cctx, r, eng, spec, h, reason); err != nil {
		m.log.Warn("recording a box exit", "box_id", id, "err", err)
	}
	m.log.Warn("box process died during a call", "box_id", id)
	return reason
}

// deathGrace is how long a broken connection waits for the box process to
// exit before calling the box alive.
const deathGrace = time.Second

func agentClass(c wire.Code) error {
	switch c {
	case wire.CodeNotFound:
		return ErrNotFound
	case wire.CodeInvalid, wire.CodeIsDir, wire.CodeNotDir:
		return ErrInvalidArgument
	case wire.CodePermission:
		return ErrFailedPrecondition
	case wire.CodeTooLarge, wire.CodeNoSpace, wire.CodeExhausted:
		return ErrResourceExhausted
	case wire.CodeExists:
		return ErrAlreadyExists
	}
	return ErrInternal
}

func (m *Manager) markUsed(id string) {
	m.mu.Lock()
	ac := m.clients[id]
	m.mu.Unlock()
	if ac != nil {
		ac.markUsed(m.cfg.Now())
	}
}

// setBusy changes the count of calls in flight on box id and returns it.
func (m *Manager) setBusy(id string, d int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.busy[id] += d
	n := m.busy[id]
	if n <= 0 {
		delete(m.busy, id)
	}
	return n
}

// exclusive reports whether the box's engine channel takes one connection
// at a time (the stored row's handle is current enough: the channel kind
// does not change between starts of one engine).
func (m *Manager) exclusive(r *persist.Box) bool {
	eng, ok := m.engines[r.Engine]
	if !ok {
		return false
	}
	x, ok := eng.(ExclusiveChannel)
	if !ok {
		return false
	}
	fresh, err := m.store.Get(m.ctx, r.ID)
	if err != nil {
		return false
	}
	_, _, h, err := m.engineFor(fresh)
	return err == nil && x.Exclusive(h)
}

func (m *Manager) isBusy(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busy[id] > 0
}

func (m *Manager) touch(id string) {
	if err := m.store.Touch(m.ctx, id, m.cfg.Now()); err != nil && !errors.Is(err, persist.ErrNotFound) {
		m.log.Warn("touch failed", "box_id", id, "err", err)
	}
}

// touchLazy records that box r is in use, unless this process wrote that
// less than a moment ago (a second, or a sixteenth of the box's idle
// timeout when that is shorter): two registry writes per call were a
// fifth of the host's CPU time on a warm session call, and last_used_at
// only has to be exact to well within the idle timeout. The reaper of
// this process also sees calls in flight (isBusy); touchWhile keeps long
// calls fresh for other processes.
func (m *Manager) touchLazy(r *persist.Box) {
	idle := r.IdleTimeout
	if idle <= 0 {
		idle = m.cfg.IdleTimeout
	}
	skip := min(time.Second, idle/16)
	now := m.cfg.Now()
	m.mu.Lock()
	if t, ok := m.touched[r.ID]; ok && now.Sub(t) >= 0 && now.Sub(t) < skip {
		m.mu.Unlock()
		return
	}
	if len(m.touched) >= 4096 {
		for id, t := range m.touched {
			if now.Sub(t) >= time.Second {
				delete(m.touched, id)
			}
		}
	}
	m.touched[r.ID] = now
	m.mu.Unlock()
	m.touch(r.ID)
}

// touchWhile touches the box every touchEvery until the returned func is called.
func (m *Manager) touchWhile(id string) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(touchEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-m.ctx.Done():
				return
			case <-t.C:
				m.touch(id)
			}
		}
	}()
	return func() { close(done) }
}

// Host-side deadlines: the agent enforces an exec's timeout, but a frozen
// or wedged box enforces nothing, so the host gives up a little later.
const (
	execGrace   = 15 * time.Second // beyond an exec's own timeout
	callTimeout = 2 * time.Minute  // any other agent call
)

// errNoAnswer marks a call the box did not answer in time.
var errNoAnswer = errors.New("the box did not answer in time")

// Exec runs a program in the box (starting the box if it is stopped).
// A non-zero exit or a timeout is a normal result.
func (m *Manager) Exec(ctx context.Context, owner, ref string, req ExecRequest, eio ExecIO) (*ExecResult, *Box, error) {
	r, err := m.withDefaults(ctx, owner, ref, &req.Cwd, &req.UID, &req.GID, &req.Env)
	if err != nil {
		return nil, nil, err
	}
	var res *wire.ExecResult
	b, err := m.withAgentOn(ctx, r, func(c *client.Client) error {
		limit := callTimeout
		if req.TimeoutMs > 0 {
			limit = time.Duration(req.TimeoutMs)*time.Millisecond + execGrace
		}
		cctx, cancel := context.WithTimeoutCause(ctx, limit, errNoAnswer)
		defer cancel()
		var err error
		res, err = c.Exec(cctx, req.wire(), eio.client())
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(cctx), errNoAnswer) {
			return errNoAnswer
		}
		return err
	})
	return execResult(res), b, err
}

// WriteFile writes r to path in the box; req.Size is exact or -1.
func (m *Manager) WriteFile(ctx context.Context, owner, ref string, req WriteFileRequest, r io.Reader) (*FileResult, *Box, error) {
	rec, err := m.withDefaults(ctx, owner, ref, nil, &req.UID, &req.GID, nil)
	if err != nil {
		return nil, nil, err
	}
	var res *wire.Result
	b, err := m.withAgentOn(ctx, rec, func(c *client.Client) error {
		cctx, cancel := context.WithTimeoutCause(ctx, callTimeout, errNoAnswer)
		defer cancel()
		var err error
		res, err = c.WriteFile(cctx, req.wire(), r)
		return noAnswer(ctx, cctx, err)
	})
	return fileResult(res), b, err
}

// ReadFile copies a file from the box into w.
func (m *Manager) ReadFile(ctx context.Context, owner, ref string, req ReadFileRequest, w io.Writer) (*FileResult, *Box, error) {
	var res *wire.Result
	b, err := m.withAgent(ctx, owner, ref, func(c *client.Client) error {
		cctx, cancel := context.WithTimeoutCause(ctx, callTimeout, errNoAnswer)
		defer cancel()
		var err error
		res, err = c.ReadFile(cctx, req.wire(), w)
		return noAnswer(ctx, cctx, err)
	})
	return fileResult(res), b, err
}

// noAnswer turns an expired host-side deadline into errNoAnswer.
func noAnswer(ctx, cctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(cctx), errNoAnswer) {
		return errNoAnswer
	}
	return err
}
