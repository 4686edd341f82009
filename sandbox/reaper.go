package sandbox

import (
	"context"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// ReapReport says what one reaper pass did.
type ReapReport struct {
	Stopped   []string // idle boxes stopped
	Destroyed []string // expired boxes destroyed
	Settled   []string // boxes stuck in a transition whose server died, reconciled
	Errors    []error
}

// StartReaper reaps idle, expired and stuck boxes every ReapInterval in the
// background until Close, which waits for it.
func (m *Manager) StartReaper() {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.ReapInterval)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				m.Reap(m.ctx)
			}
		}
	}()
}

// stuckAfter is how long a box may sit in a transitional status before the
// reaper takes it for abandoned (a live server holds the box's lock for the
// whole transition, and a start is bounded by StartTimeout).
func (m *Manager) stuckAfter() time.Duration { return m.cfg.StartTimeout + time.Minute }

// Reap destroys boxes past their expiry and stops running boxes idle longer
// than their idle timeout (the box's own, else the server's). Boxes with
// calls in flight in this process are left alone; conditions are checked
// again under each box's lock, so several servers may reap at once.
func (m *Manager) Reap(ctx context.Context) ReapReport {
	var rep ReapReport
	rows, err := m.store.List(ctx, persist.Filter{})
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return rep
	}
	now := m.cfg.Now()
	for _, r := range rows {
		if _, ok := m.engines[r.Engine]; !ok {
			continue // another server's engine: not ours to stop or destroy
		}
		st := Status(r.Status)
		switch {
		case st != StatusRunning && st != StatusPooled && (st.Live() || st == StatusDestroying) && now.Sub(r.UpdatedAt) > m.stuckAfter():
			if m.isBusy(r.ID) || !m.lockFree(ctx, r.ID) {
				continue
			}
			var rr ReconcileReport
			if err := m.reconcileBox(ctx, r.ID, false, &rr); err != nil {
				rep.Errors = append(rep.Errors, err)
				continue
			}
			rep.Settled = append(rep.Settled, r.ID)
		case !r.ExpiresAt.IsZero() && now.After(r.ExpiresAt):
			if m.isBusy(r.ID) {
				continue
			}
			if _, err := m.destroy(ctx, r.ID, "expired (ttl)"); err != nil {
				rep.Errors = append(rep.Errors, err)
				continue
			}
			rep.Destroyed = append(rep.Destroyed, r.ID)
		case Status(r.Status) == StatusRunning && m.idle(r, now):
			if m.isBusy(r.ID) {
				continue
			}
			// Re-read under the stop's lock: it may have been used meanwhile.
			if fresh, err := m.store.Get(ctx, r.ID); err != nil || !m.idle(fresh, m.cfg.Now()) {
				continue
			}
			if _, err := m.stop(ctx, r.ID, "stopped after being idle"); err != nil {
				rep.Errors = append(rep.Errors, err)
				continue
			}
			rep.Stopped = append(rep.Stopped, r.ID)
		}
	}
	return rep
}

func (m *Manager) idle(r *persist.Box, now time.Time) bool {
	if re, ok := m.engines[r.Engine].(Remote); ok && !re.CanStop() {
		return false // no idle stop for boxes that would lose their files
	}
	timeout := r.IdleTimeout
	if timeout <= 0 {
		timeout = m.cfg.IdleTimeout
	}
	return now.Sub(r.LastUsedAt) > timeout
}

// lockFree reports whether nobody holds box id's lock right now.
func (m *Manager) lockFree(ctx context.Context, id string) bool {
	lctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	lk, err := lockBox(lctx, m.locksDir(), id)
	if err != nil {
		return false
	}
	lk.unlock(false)
	return true
}
