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
	Errors    []error
}

// Run reaps idle and expired boxes every ReapInterval until ctx is done or
// the Manager is closed.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.Reap(ctx)
		}
	}
}

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
		switch {
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
	timeout := r.IdleTimeout
	if timeout <= 0 {
		timeout = m.cfg.IdleTimeout
	}
	return now.Sub(r.LastUsedAt) > timeout
}
