package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// ReconcileReport says what Reconcile found and did.
type ReconcileReport struct {
	Rebooted  bool     // the host boot id changed since the last server
	Checked   int      // boxes looked at
	Alive     int      // boxes still running
	Stopped   []string // boxes found dead and marked stopped
	Failed    []string // boxes marked failed
	Foreign   []string // boxes of engines this server does not have: left alone
	Destroyed []string // half-destroyed boxes finished off
	Orphans   []string // box directories without a row, cleaned
	Snapshots []string // unfinished snapshots (or their leftover files) removed
	Errors    []error  // per-box failures; one box never aborts the rest
}

// Reconcile makes the store agree with reality, under one time budget
// (ctx). It is run at server start and is safe to run while other server
// processes use the same home: each box is examined under its lock.
//
// A changed host boot id means the machine rebooted, so no box process can
// have survived: every live box becomes stopped. Otherwise each live box's
// engine checks its process (pid and start time) and agent; dead ones become
// stopped, or failed if they died while being created. Boxes left in
// "destroying" are destroyed again, and box directories with no row (a
// crash between engine teardown and the row's deletion, or a lost row) have
// their processes killed and are removed.
//
// Racy by nature: a box can die right after it was found alive. Callers
// still handle dead boxes on use (see ensureRunning).
func (m *Manager) Reconcile(ctx context.Context) ReconcileReport {
	var rep ReconcileReport
	boot, err := m.cfg.BootID()
	if err != nil {
		rep.Errors = append(rep.Errors, err)
	} else {
		prev, err := m.store.SwapBootID(ctx, boot)
		if err != nil {
			rep.Errors = append(rep.Errors, err)
		}
		rep.Rebooted = prev != "" && prev != boot
	}
	rows, err := m.store.List(ctx, persist.Filter{})
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return rep
	}
	for _, r := range rows {
		if ctx.Err() != nil {
			rep.Errors = append(rep.Errors, ctx.Err())
			break
		}
		rep.Checked++
		if err := m.reconcileBox(ctx, r.ID, rep.Rebooted, &rep); err != nil {
			rep.Errors = append(rep.Errors, err)
			m.log.Warn("reconcile box", "box_id", r.ID, "err", err)
		}
	}
	m.cleanOrphans(ctx, &rep)
	m.reconcileSnapshots(ctx, &rep)
	m.log.Info("reconciled", "rebooted", rep.Rebooted, "checked", rep.Checked, "alive", rep.Alive,
		"stopped", len(rep.Stopped), "failed", len(rep.Failed), "foreign", len(rep.Foreign), "destroyed", len(rep.Destroyed), "orphans", len(rep.Orphans), "errors", len(rep.Errors))
	return rep
}

func (m *Manager) reconcileBox(ctx context.Context, id string, rebooted bool, rep *ReconcileReport) error {
	lk, err := lockBox(ctx, m.locksDir(), id)
	if err != nil {
		return err
	}
	r, err := m.store.Get(ctx, id)
	if err != nil {
		lk.unlock(false)
		if errors.Is(err, persist.ErrNotFound) {
			return nil // destroyed meanwhile
		}
		return err
	}
	st := Status(r.Status)
	if _, ok := m.engines[r.Engine]; !ok && (st.Live() || st == StatusDestroying) {
		// Another server with that engine may be running it: what this
		// server cannot prove dead, it leaves alone.
		lk.unlock(false)
		rep.Foreign = append(rep.Foreign, id)
		return nil
	}
	if r.Owner == persist.PoolOwner && st != StatusDestroying {
		return m.reconcilePooled(ctx, lk, r, rebooted, rep)
	}
	if st == StatusDestroying {
		lk.unlock(false)
		if _, err := m.destroy(ctx, id, "destroy finished after a restart"); err != nil {
			return err
		}
		rep.Destroyed = append(rep.Destroyed, id)
		return nil
	}
	defer lk.unlock(false)
	if !st.Live() {
		return nil
	}
	eng, spec, h, err := m.engineFor(r)
	if err != nil {
		return err
	}
	reason := "host rebooted"
	if _, remote := eng.(Remote); !rebooted || remote { // a host reboot ends no remote box
		rerr := eng.Recover(ctx, spec, h)
		if rerr == nil {
			return m.reattach(ctx, r, eng, spec, h, rep)
		}
		reason = "box process exited while no server was watching"
		if !errors.Is(rerr, ErrNotRunning) {
			reason = "box process lost"
			m.log.Warn("box process lost", "box_id", id, "err", rerr)
		}
	}
	to, err := m.settleDead(ctx, r, eng, spec, h, reason)
	if err != nil {
		return err
	}
	if to == StatusFailed {
		rep.Failed = append(rep.Failed, id)
	} else {
		rep.Stopped = append(rep.Stopped, id)
	}
	return nil
}

// reconcilePooled keeps a live pooled box in the pool (this server
// watches it from now on) and destroys any other box of the pool: one
// whose process is gone, and one a dead server left half-made (under the
// lock, creating means abandoned; its warm-up may not have finished). It
// releases lk.
func (m *Manager) reconcilePooled(ctx context.Context, lk *boxLock, r *persist.Box, rebooted bool, rep *ReconcileReport) error {
	if Status(r.Status) == StatusPooled && !rebooted {
		eng, spec, h, err := m.engineFor(r)
		if err != nil {
			lk.unlock(false)
			return err
		}
		if eng.Recover(ctx, spec, h) == nil {
			defer lk.unlock(false)
			return m.reattach(ctx, r, eng, spec, h, rep)
		}
	}
	lk.unlock(false)
	if m.destroyPooled(ctx, r.ID, "lost while no server watched it") {
		rep.Destroyed = append(rep.Destroyed, r.ID)
	}
	return nil
}

// agentCheck bounds the hello Reconcile expects from a live box's agent.
const agentCheck = 10 * time.Second

// reattach takes over a box whose process is alive: its agent must answer
// (where the channel admits a second server at all), else the box is
// stopped and marked failed, so nothing ever runs a second process on its
// disk. A live box becomes running whatever transition was cut short, and
// this server watches its exit from now on.
func (m *Manager) reattach(ctx context.Context, r *persist.Box, eng Engine, spec Spec, h Handle, rep *ReconcileReport) error {
	id := r.ID
	if !m.exclusive(r) {
		cctx, cancel := context.WithTimeout(ctx, agentCheck)
		c, err := m.connect(cctx, eng, spec, h)
		cancel()
		if err != nil {
			m.log.Warn("box runs but its agent does not answer; stopping it", "box_id", id, "err", err)
			if serr := eng.Stop(ctx, spec, h, 0); serr != nil {
				return serr
			}
			if _, err := m.transition(ctx, id, StatusFailed, "its agent stopped answering; the box was stopped", nil); err != nil {
				return err
			}
			rep.Failed = append(rep.Failed, id)
			return nil
		}
		c.Close()
	}
	if st := Status(r.Status); st != StatusRunning && st != StatusPooled {
		if _, err := m.setRunning(ctx, id, h); err != nil {
			return err
		}
	}
	m.watch(id, eng, spec, h)
	rep.Alive++
	return nil
}

// cleanOrphans kills and removes box directories that have no row.
func (m *Manager) cleanOrphans(ctx context.Context, rep *ReconcileReport) {
	ents, err := os.ReadDir(m.boxesDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		id := e.Name()
		if !e.IsDir() {
			continue
		}
		lk, err := lockBox(ctx, m.locksDir(), id)
		if err != nil {
			continue
		}
		if _, err := m.store.Get(ctx, id); !errors.Is(err, persist.ErrNotFound) {
			lk.unlock(false)
			continue
		}
		dir := filepath.Join(m.boxesDir(), id)
		spec := Spec{ID: id, BoxDir: dir, Socket: m.socketPath(id)}
		var h Handle
		// The engine that made it is named by engine.json; without one (a
		// server killed before the manager wrote it) every engine looks,
		// since the VM engines record their VMM in the box directory at
		// spawn. While anything survives, the directory stays, so the next
		// reconcile can still find it.
		engs := []Engine{}
		if b, err := os.ReadFile(filepath.Join(dir, engineStateFile)); err == nil && json.Unmarshal(b, &h) == nil {
			if eng, ok := m.engines[h.Engine]; ok {
				engs = append(engs, eng)
			}
		} else {
			for _, n := range m.order {
				engs = append(engs, m.engines[n])
			}
		}
		var derr error
		for _, eng := range engs {
			dctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := eng.Destroy(dctx, spec, h); err != nil {
				derr = err
			}
			cancel()
		}
		if derr != nil {
			rep.Errors = append(rep.Errors, derr)
			lk.unlock(false)
			continue
		}
		os.RemoveAll(dir)
		os.Remove(spec.Socket)
		lk.unlock(true)
		rep.Orphans = append(rep.Orphans, id)
		m.log.Info("removed orphaned box directory", "box_id", id)
	}
}
