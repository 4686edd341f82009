package sandbox

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// background returns the context for bookkeeping that follows a side
// effect (a box started, a process killed): the effect happened whether or
// not the caller still waits, so the record of it must not be cancelled
// with the caller's request; it is bounded by d instead. Compare
// containerd's cleanup.Background.
func background(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// bookkeeping bounds one background record.
const bookkeeping = 30 * time.Second

// transition moves box id to status to with reason, as the table in
// status.go allows, and persists it in one write together with whatever set
// changes (the engine handle of a box that now runs). Moving to the status
// the box already has only updates the reason. The caller holds the box's
// lock and must handle the error: an illegal move is ErrFailedPrecondition,
// a lost row ErrNotFound, a store failure ErrInternal.
func (m *Manager) transition(ctx context.Context, id string, to Status, reason string, set func(*persist.Box)) (*persist.Box, error) {
	var from Status
	r, err := m.store.Update(ctx, id, func(b *persist.Box) error {
		from = Status(b.Status)
		if from != to && !CanTransition(from, to) {
			return Errorf(ErrFailedPrecondition, "box %s cannot go from %s to %s", id, from, to)
		}
		b.Status, b.StatusReason = string(to), reason
		if set != nil {
			set(b)
		}
		return nil
	})
	var e *Error
	switch {
	case err == nil:
		if from != to {
			m.log.Debug("box status", "box_id", id, "from", from, "to", to, "reason", reason)
		}
		return r, nil
	case errors.As(err, &e):
		return nil, err
	case errors.Is(err, persist.ErrNotFound):
		return nil, Wrapf(ErrNotFound, err, "box %s no longer exists", id)
	case errors.Is(err, persist.ErrFull):
		return nil, Wrapf(ErrResourceExhausted, err, "no space left on the server's disk to record box %s going %s", id, to)
	}
	return nil, Wrapf(ErrInternal, err, "could not record box %s going %s", id, to)
}

// setRunning records that box id runs with handle h.
func (m *Manager) setRunning(ctx context.Context, id string, h Handle) (*persist.Box, error) {
	return m.setLive(ctx, id, StatusRunning, h)
}

// setLive records that box id runs with handle h, in status to (running,
// or pooled for a warm pool's box).
func (m *Manager) setLive(ctx context.Context, id string, to Status, h Handle) (*persist.Box, error) {
	return m.transition(ctx, id, to, "", func(b *persist.Box) {
		b.EngineState = mustJSON(h)
		b.LastUsedAt = m.cfg.Now()
	})
}

// settleDead is the one place that decides what a box whose process is gone
// becomes: the engine clears what the dead process left (sockets, cgroups,
// helpers; Stop with no grace also kills anything the handle still names),
// then a box that had run becomes stopped and one that died before it first
// ran becomes failed. The caller holds the lock and has established that
// the process is gone (Wait, Recover, or a host reboot).
func (m *Manager) settleDead(ctx context.Context, r *persist.Box, eng Engine, spec Spec, h Handle, reason string) (Status, error) {
	if err := eng.Stop(ctx, spec, h, 0); err != nil {
		m.log.Warn("clearing a dead box", "box_id", r.ID, "err", err)
	}
	to := StatusStopped
	if Status(r.Status) == StatusCreating || Status(r.Status) == StatusStarting {
		to = StatusFailed
	}
	_, err := m.transition(ctx, r.ID, to, reason, nil)
	return to, err
}

// watch owns the exit of a box process this server started: it waits for
// the process to end and records the exit at once, so list_boxes never
// shows a dead box as running (other servers learn it from the registry).
// It ends with the Manager, or when the box is restarted, stopped or
// destroyed by anyone (the recorded handle then differs or the status is
// not running).
func (m *Manager) watch(id string, eng Engine, spec Spec, h Handle) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := eng.Wait(m.ctx, spec, h); err != nil {
			return // the Manager is closing (or the handle is unreadable)
		}
		ctx, cancel := background(m.ctx, bookkeeping)
		defer cancel()
		if m.recordExit(ctx, id, eng, spec, h) {
			// A pooled box is never restarted: it goes.
			m.destroyPooled(ctx, id, "its process ended")
		}
	}()
}

// recordExit records that the process of box id (handle h) ended, unless
// the box was destroyed, stopped or restarted meanwhile. It reports
// whether the box was a pooled one.
func (m *Manager) recordExit(ctx context.Context, id string, eng Engine, spec Spec, h Handle) (pooled bool) {
	lk, err := lockBox(ctx, m.locksDir(), id)
	if err != nil {
		return false
	}
	defer lk.unlock(false)
	r, err := m.store.Get(ctx, id)
	if err != nil || (Status(r.Status) != StatusRunning && Status(r.Status) != StatusPooled) || !bytes.Equal(r.EngineState, mustJSON(h)) {
		return false // destroyed, stopped or restarted meanwhile: not ours to record
	}
	m.dropClient(id)
	if _, err := m.settleDead(ctx, r, eng, spec, h, "box process exited"); err != nil {
		m.log.Warn("recording a box exit", "box_id", id, "err", err)
		return false
	}
	m.log.Warn("box process exited", "box_id", id)
	return r.Owner == persist.PoolOwner
}
