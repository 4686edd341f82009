package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// Remote is implemented by engines whose boxes live outside this host, in
// a system several servers share (the Kubernetes engine). That system is
// the source of truth: the registry's rows of its boxes are a cache the
// manager brings in step with RemoteBoxes when it lists boxes or misses one
// (syncRemote). Remote boxes hold none of this host's memory or CPUs, take
// create_box's image as a reference the engine's runtime pulls (ImageRef),
// and get the image's env, working directory and user from that runtime.
type Remote interface {
	Engine
	// RemoteBoxes lists the engine's boxes of owner ("": every owner) as
	// the remote system holds them.
	RemoteBoxes(ctx context.Context, owner string) ([]RemoteBox, error)
	// CanStop says whether a stopped box keeps its files (so idle stop and
	// stop are offered).
	CanStop() bool
	// ImageRef checks create_box's image and returns the reference the
	// engine runs ("default" or "": the engine's default image).
	ImageRef(ref string) (string, error)
}

// RemoteBox is a box as a Remote engine's system holds it.
type RemoteBox struct {
	ID, Name, Owner string
	Spec            Spec
	Handle          Handle
	Running         bool // the box answers (else stopped: its files kept, or its pod ended)
	Starting        bool // being made or started (by some server): not adopted yet
	CreatedAt       time.Time
}

// remoteListTimeout bounds one listing of a remote system's boxes.
var remoteListTimeout = 5 * time.Second

// remoteEngines are the names of the configured Remote engines.
func (m *Manager) remoteEngines() []string {
	var out []string
	for _, n := range m.order {
		if _, ok := m.engines[n].(Remote); ok {
			out = append(out, n)
		}
	}
	return out
}

// syncRemote brings the registry's rows of owner's remote boxes in step
// with the remote systems: a box another server made is recorded here, a
// box whose remote resources are gone is dropped. Rows are read before the
// remote list, so a box this server is making (its resources exist before
// its row says running) is never taken for gone. A remote system that does
// not answer leaves the rows as they are.
func (m *Manager) syncRemote(ctx context.Context, owner string) {
	names := m.remoteEngines()
	if len(names) == 0 {
		return
	}
	rows, err := m.store.List(ctx, persist.Filter{Owner: owner})
	if err != nil {
		return
	}
	for _, n := range names {
		r := m.engines[n].(Remote)
		// A cluster that does not answer must not hang list_boxes: the
		// cached rows are shown instead.
		lctx, cancel := context.WithTimeout(ctx, remoteListTimeout)
		boxes, err := r.RemoteBoxes(lctx, owner)
		cancel()
		if err != nil {
			m.log.Warn("cannot list remote boxes; showing the cached ones", "engine", n, "err", err)
			continue
		}
		remote := map[string]RemoteBox{}
		for _, b := range boxes {
			remote[b.ID] = b
		}
		local := map[string]bool{}
		for _, row := range rows {
			if row.Engine != n {
				continue
			}
			local[row.ID] = true
			st := Status(row.Status)
			if b, ok := remote[row.ID]; ok {
				if h := mustJSON(b.Handle); b.Running && st == StatusRunning && !bytes.Equal(row.EngineState, h) {
					// Restarted through another server: reach the new one.
					m.store.Update(ctx, row.ID, func(r *persist.Box) error { r.EngineState = h; return nil })
					m.dropClient(row.ID)
				}
				continue
			}
			if st != StatusRunning && st != StatusStopped && st != StatusFailed {
				continue
			}
			m.dropGone(ctx, row.ID, st)
		}
		for _, b := range boxes {
			if !local[b.ID] && !b.Starting && b.Owner != "" && b.Owner != persist.PoolOwner {
				m.adopt(ctx, n, b)
			}
		}
	}
}

// dropGone removes the row of a remote box whose resources are gone, if
// its status is still the one the sync saw.
func (m *Manager) dropGone(ctx context.Context, id string, seen Status) {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	lk, r, err := m.lockRow(lctx, id)
	if err != nil {
		return
	}
	if Status(r.Status) != seen {
		lk.unlock(false)
		return
	}
	m.dropClient(id)
	err = m.store.Delete(ctx, id)
	if err == nil {
		os.RemoveAll(filepath.Join(m.boxesDir(), id)) // its engine state file
	}
	lk.unlock(err == nil)
	if err == nil {
		m.log.Info("box is gone from its cluster; dropped", "box_id", id)
	}
}

// adopt records a remote box another server made.
func (m *Manager) adopt(ctx context.Context, engine string, b RemoteBox) {
	spec := b.Spec
	spec.ID, spec.Name = b.ID, b.Name
	spec.BoxDir, spec.Socket = filepath.Join(m.boxesDir(), b.ID), m.socketPath(b.ID)
	status := StatusStopped
	if b.Running {
		status = StatusRunning
	}
	row := &persist.Box{ID: b.ID, Owner: b.Owner, Name: b.Name, Engine: engine, Image: spec.Image, Status: string(status),
		StatusReason: "made through another server", Spec: mustJSON(spec), CreatedAt: b.CreatedAt}
	if b.Running {
		row.EngineState = mustJSON(b.Handle)
	}
	if err := m.store.Insert(ctx, row); err != nil && !errors.Is(err, persist.ErrNameTaken) {
		m.log.Warn("cannot record a box of the cluster", "box_id", b.ID, "err", err)
	}
}

// remoteSpecJSON is what a Remote engine stores of a box's spec with the
// box (host-local fields left out).
func RemoteSpecJSON(s Spec) []byte {
	s.BoxDir, s.Socket, s.IDRange, s.ClaimEnv, s.FromSnapshot = "", "", 0, nil, nil
	b, _ := json.Marshal(s)
	return b
}
