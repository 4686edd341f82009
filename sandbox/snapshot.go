package sandbox

// Snapshots and clones. A snapshot is a registry row (persist.Snapshot) and
// a directory home/snapshots/<id> holding the files the engine wrote: the
// box's disk on every engine, and on VM engines that can, its memory and
// device state. It is taken of a running box, which keeps running. A box
// made from a snapshot (CreateRequest.FromSnapshot) starts from those files
// with an identity of its own.
//
// Crash safety: the row is recorded first as "creating" (invisible), the
// files are written under snapshots/.tmp-<id> and renamed, then the row
// becomes "ready" in one transaction that also checks the quota. Creation
// holds an exclusive flock on locks/snap-<id>.lock, so Reconcile (of any
// server) removes only snapshots nobody is making: a "creating" or
// "deleting" row whose lock is free, with its files. Boxes being made from
// a snapshot hold its lock shared; DeleteSnapshot takes it exclusive, so a
// snapshot never goes while a clone copies it.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/names"
	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// SnapshotSource tells an engine that a box is made from a snapshot. The
// engine uses it at the box's first start (when the box has no disk yet).
type SnapshotSource struct {
	ID string `json:"id"`
	// Dir holds the snapshot's files (home/snapshots/<id>).
	Dir string `json:"dir"`
	// Memory: the snapshot holds memory state to resume from.
	Memory bool `json:"memory,omitempty"`
	// Backed: the box's disk keeps reading the snapshot's files (a qcow2
	// backing file), so the snapshot cannot go while the box exists.
	Backed bool `json:"backed,omitempty"`
}

// Snapshotter is implemented by engines that can snapshot a running box.
type Snapshotter interface {
	// Snapshot writes the running box's state into dir (it exists and is
	// empty), leaving the box running as before. It returns whether the
	// memory is included.
	Snapshot(ctx context.Context, spec Spec, h Handle, dir string) (memory bool, err error)
	// ClonesShareFiles reports whether boxes made from this engine's
	// snapshots read the snapshot's files for as long as they exist (a
	// qcow2 backing file) instead of owning copies.
	ClonesShareFiles() bool
}

// Snapshot is a snapshot as the manager reports it.
type Snapshot struct {
	ID             string
	Name           string
	Owner          string
	BoxID          string
	Engine         string
	Image          string
	IncludesMemory bool
	Bytes          int64
	CreatedAt      time.Time
	Spec           Spec
}

func toSnapshot(r *persist.Snapshot) *Snapshot {
	s := &Snapshot{ID: r.ID, Name: r.Name, Owner: r.Owner, BoxID: r.BoxID, Engine: r.Engine, Image: r.Image,
		IncludesMemory: r.IncludesMemory, Bytes: r.Bytes, CreatedAt: r.CreatedAt}
	json.Unmarshal(r.Spec, &s.Spec)
	return s
}

func (m *Manager) snapshotsDir() string { return filepath.Join(m.cfg.Home, "snapshots") }

func (m *Manager) snapLockPath(id string) string {
	return filepath.Join(m.locksDir(), "snap-"+id+".lock")
}

// SnapshotBox snapshots owner's running box ref. name is optional and
// unique among owner's snapshots.
func (m *Manager) SnapshotBox(ctx context.Context, owner, ref, name string) (*Snapshot, error) {
	if name != "" && !names.Valid(name) {
		return nil, Errorf(ErrInvalidArgument, "snapshot name %q is not valid: use 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit", name, names.MaxLen)
	}
	r, err := m.resolve(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	// The box's lock keeps stop, destroy and the reaper away meanwhile.
	lk, r, err := m.lockRow(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	defer lk.unlock(false)
	if Status(r.Status) != StatusRunning {
		return nil, Errorf(ErrFailedPrecondition, "box %s is %s; only a running box can be snapshotted (any call to a stopped box starts it again)", r.ID, r.Status)
	}
	eng, spec, h, err := m.engineFor(r)
	if err != nil {
		return nil, err
	}
	snapper, ok := eng.(Snapshotter)
	if !ok {
		return nil, Errorf(ErrFailedPrecondition, "engine %s cannot snapshot boxes", eng.Name())
	}
	row := &persist.Snapshot{ID: persist.NewID(), Owner: owner, Name: name, BoxID: r.ID, Engine: r.Engine, Image: r.Image,
		Status: persist.SnapshotCreating, Spec: r.Spec, CreatedAt: m.cfg.Now()}
	// Held from before the row exists: a reconcile that sees the creating
	// row finds it locked and leaves it alone.
	slk, err := lockFile(ctx, m.snapLockPath(row.ID), true, true)
	if err != nil {
		return nil, Wrapf(ErrInternal, err, "cannot lock the new snapshot")
	}
	if err := m.store.InsertSnapshot(ctx, row, m.cfg.MaxSnapshotBytes); err != nil {
		slk.unlock(true)
		switch {
		case errors.Is(err, persist.ErrNameTaken):
			return nil, Wrapf(ErrAlreadyExists, err, "%s; pick another name or delete that snapshot", trimSuffix(err, persist.ErrNameTaken))
		case errors.Is(err, persist.ErrOverQuota):
			return nil, Wrapf(ErrResourceExhausted, err, "snapshots on this server already fill their quota (%s); delete snapshots you no longer need", gib(m.cfg.MaxSnapshotBytes))
		}
		return nil, Wrapf(ErrInternal, err, "could not record the snapshot")
	}
	log := m.log.With("box_id", r.ID, "snapshot_id", row.ID, "engine", eng.Name())
	t0 := time.Now()
	// What follows must finish or be undone even if the caller leaves.
	bctx, cancel := background(ctx, 10*time.Minute)
	defer cancel()
	done := false
	defer func() {
		if !done {
			derr := errors.Join(removeSnapshotFiles(m.snapshotsDir(), row.ID), m.store.DeleteSnapshot(bctx, row.ID))
			if derr != nil {
				log.Warn("failed snapshot not fully removed; reconcile retries", "err", derr)
			}
		}
		slk.unlock(!done) // a ready snapshot keeps its lock file (others may hold it)
	}()
	tmp := filepath.Join(m.snapshotsDir(), tmpPrefix+row.ID)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, Wrapf(ErrResourceExhausted, err, "cannot create the snapshot's directory")
	}
	memory, err := snapper.Snapshot(bctx, spec, h, tmp)
	if err != nil {
		log.Warn("snapshot failed", "err", err)
		if e := (*Error)(nil); errors.As(err, &e) {
			return nil, err
		}
		if isNoSpace(err) {
			return nil, Wrapf(ErrResourceExhausted, err, "no space left on the server's disk for the snapshot")
		}
		return nil, Wrapf(ErrInternal, err, "snapshot of box %s failed (see the server log)", r.ID)
	}
	bytes, files, err := diskUsage(tmp)
	if err != nil {
		return nil, Wrapf(ErrInternal, err, "cannot measure the snapshot")
	}
	final := filepath.Join(m.snapshotsDir(), row.ID)
	if err := os.Rename(tmp, final); err != nil {
		return nil, Wrapf(ErrInternal, err, "cannot put the snapshot in place")
	}
	if err := m.store.FinishSnapshot(bctx, row.ID, bytes, files, memory, m.cfg.MaxSnapshotBytes); err != nil {
		if errors.Is(err, persist.ErrOverQuota) {
			return nil, Wrapf(ErrResourceExhausted, err, "the snapshot (%s) would exceed the server's snapshot quota (%s); delete snapshots you no longer need", gib(bytes), gib(m.cfg.MaxSnapshotBytes))
		}
		return nil, Wrapf(ErrInternal, err, "could not record the snapshot")
	}
	done = true
	row.Status, row.Bytes, row.Files, row.IncludesMemory = persist.SnapshotReady, bytes, files, memory
	log.Info("snapshot taken", "bytes", bytes, "memory", memory, "t", time.Since(t0))
	return toSnapshot(row), nil
}

// ListSnapshots returns owner's snapshots, oldest first.
func (m *Manager) ListSnapshots(ctx context.Context, owner string) ([]*Snapshot, error) {
	rows, err := m.store.ListSnapshots(ctx, owner)
	if err != nil {
		return nil, Wrapf(ErrInternal, err, "could not list snapshots")
	}
	out := make([]*Snapshot, 0, len(rows))
	for _, r := range rows {
		out = append(out, toSnapshot(r))
	}
	return out, nil
}

func (m *Manager) resolveSnapshot(ctx context.Context, owner, ref string) (*persist.Snapshot, error) {
	r, err := m.store.ResolveSnapshot(ctx, owner, ref)
	switch {
	case errors.Is(err, persist.ErrNotFound):
		return nil, Wrapf(ErrNotFound, err, "no snapshot matches %q; list_snapshots shows the snapshots you have", ref)
	case errors.Is(err, persist.ErrAmbiguous):
		return nil, Wrapf(ErrInvalidArgument, err, "%s", trimSuffix(err, persist.ErrAmbiguous))
	case err != nil:
		return nil, Wrapf(ErrInternal, err, "could not look up snapshot %q", ref)
	}
	return r, nil
}

// DeleteSnapshot deletes owner's snapshot ref and its files. It refuses
// (ErrFailedPrecondition, naming them) while boxes depend on it: boxes whose
// disk is backed by it (VM clones) and boxes being made from it. Boxes that
// own copies of its files (jail clones) do not hold it.
func (m *Manager) DeleteSnapshot(ctx context.Context, owner, ref string) (*Snapshot, error) {
	r, err := m.resolveSnapshot(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	lk, err := lockFile(ctx, m.snapLockPath(r.ID), true, true)
	if err != nil {
		return nil, Wrapf(ErrDeadlineExceeded, err, "snapshot %s is busy (boxes are being made from it)", r.ID)
	}
	removed := false
	defer func() { lk.unlock(removed) }()
	if err := m.store.MarkSnapshotDeleting(ctx, r.ID, []string{string(StatusCreating)}); err != nil {
		switch {
		case errors.Is(err, persist.ErrInUse):
			return nil, Wrapf(ErrFailedPrecondition, err, "%s; destroy those boxes first (their disks read the snapshot's files)", trimSuffix(err, persist.ErrInUse))
		case errors.Is(err, persist.ErrNotFound):
			return nil, Wrapf(ErrNotFound, err, "snapshot %s no longer exists", r.ID)
		}
		return nil, Wrapf(ErrInternal, err, "could not delete snapshot %s", r.ID)
	}
	dctx, cancel := background(ctx, time.Minute)
	defer cancel()
	if err := removeSnapshotFiles(m.snapshotsDir(), r.ID); err != nil {
		return nil, Wrapf(ErrInternal, err, "snapshot %s: its files could not all be removed; try again", r.ID)
	}
	if err := m.store.DeleteSnapshot(dctx, r.ID); err != nil && !errors.Is(err, persist.ErrNotFound) {
		return nil, Wrapf(ErrInternal, err, "snapshot %s: files removed but the record could not be deleted", r.ID)
	}
	removed = true
	m.log.Info("snapshot deleted", "snapshot_id", r.ID)
	return toSnapshot(r), nil
}

// prepareClone resolves req.FromSnapshot, takes the snapshot's lock shared
// (released by the returned func, after the box is recorded and started),
// and fills req from the snapshot: its image and engine, and its shape
// where req leaves it open. A memory snapshot fixes cpus, memory and
// whether there is a network device; every snapshot fixes the disk size.
func (m *Manager) prepareClone(ctx context.Context, owner string, req *CreateRequest) (func(), error) {
	r, err := m.resolveSnapshot(ctx, owner, req.FromSnapshot)
	if err != nil {
		return nil, err
	}
	lk, err := lockFile(ctx, m.snapLockPath(r.ID), false, true)
	if err != nil {
		return nil, Wrapf(ErrDeadlineExceeded, err, "snapshot %s is busy", r.ID)
	}
	if r, err = m.store.GetSnapshot(ctx, r.ID); err != nil || r.Status != persist.SnapshotReady {
		lk.unlock(false)
		return nil, Wrapf(ErrNotFound, err, "snapshot %s was deleted meanwhile", req.FromSnapshot)
	}
	sn := toSnapshot(r)
	bad := func(field string, got, want any) error {
		lk.unlock(false)
		return Errorf(ErrInvalidArgument, "a box made from snapshot %s has the snapshot's %s (%v), not %v; leave %s out", r.ID, field, want, got, field)
	}
	if req.Image != "" && req.Image != sn.Image {
		return nil, bad("image", req.Image, sn.Image)
	}
	if req.Engine != "" && req.Engine != "auto" && req.Engine != sn.Engine {
		return nil, bad("engine", req.Engine, sn.Engine)
	}
	if req.DiskMiB != 0 && req.DiskMiB != sn.Spec.DiskMiB {
		return nil, bad("disk_mib", req.DiskMiB, sn.Spec.DiskMiB)
	}
	if sn.IncludesMemory {
		if req.CPUs != 0 && req.CPUs != sn.Spec.CPUs {
			return nil, bad("cpus", req.CPUs, sn.Spec.CPUs)
		}
		if req.MemoryMiB != 0 && req.MemoryMiB != sn.Spec.MemoryMiB {
			return nil, bad("memory_mib", req.MemoryMiB, sn.Spec.MemoryMiB)
		}
		if (req.Network || len(req.NetworkAllow) > 0) && !sn.Spec.Network {
			return nil, bad("network", true, false)
		}
	}
	req.Image, req.Engine, req.DiskMiB = sn.Image, sn.Engine, sn.Spec.DiskMiB
	if req.CPUs == 0 {
		req.CPUs = sn.Spec.CPUs
	}
	if req.MemoryMiB == 0 {
		req.MemoryMiB = sn.Spec.MemoryMiB
	}
	if sn.IncludesMemory && sn.Spec.Network && !req.Network && len(req.NetworkAllow) == 0 {
		// The VM has a network device; without a network it stays unplugged.
		req.Network, req.NetworkAllow = sn.Spec.Network, sn.Spec.NetworkAllow
	}
	req.snapshot = sn
	return func() { lk.unlock(false) }, nil
}

// applyClone makes spec a clone's: the snapshot's run defaults and
// environment (under the request's own variables) and its source.
func (m *Manager) applyClone(req *CreateRequest, eng Engine, spec *Spec) {
	sn := req.snapshot
	if sn == nil {
		return
	}
	spec.WorkDir, spec.UID, spec.GID = sn.Spec.WorkDir, sn.Spec.UID, sn.Spec.GID
	env := map[string]string{}
	for k, v := range sn.Spec.Env {
		env[k] = v
	}
	for k, v := range req.Env {
		env[k] = v
	}
	if len(env) > 0 {
		spec.Env = env
	}
	backed := false
	if s, ok := eng.(Snapshotter); ok {
		backed = s.ClonesShareFiles()
	}
	spec.FromSnapshot = &SnapshotSource{ID: sn.ID, Dir: filepath.Join(m.snapshotsDir(), sn.ID), Memory: sn.IncludesMemory, Backed: backed}
}

// reconcileSnapshots finishes what dead servers left: a creating or
// deleting snapshot whose lock is free goes with its files, and so does a
// directory under snapshots/ that no row names.
func (m *Manager) reconcileSnapshots(ctx context.Context, rep *ReconcileReport) {
	rows, err := m.store.ListSnapshots(ctx, "")
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return
	}
	known := map[string]bool{}
	for _, r := range rows {
		known[r.ID] = true
		if r.Status == persist.SnapshotReady {
			continue
		}
		lk, err := lockFile(ctx, m.snapLockPath(r.ID), true, false)
		if err != nil {
			continue // being made or deleted right now
		}
		if cur, err := m.store.GetSnapshot(ctx, r.ID); err != nil || cur.Status == persist.SnapshotReady {
			lk.unlock(false) // finished meanwhile, or gone
			continue
		}
		err = errors.Join(removeSnapshotFiles(m.snapshotsDir(), r.ID), m.store.DeleteSnapshot(ctx, r.ID))
		lk.unlock(err == nil)
		if err != nil {
			rep.Errors = append(rep.Errors, err)
			continue
		}
		m.log.Info("removed a snapshot a dead server left unfinished", "snapshot_id", r.ID, "status", r.Status)
		rep.Snapshots = append(rep.Snapshots, r.ID)
	}
	ents, _ := os.ReadDir(m.snapshotsDir())
	for _, e := range ents {
		id := strings.TrimPrefix(e.Name(), tmpPrefix)
		if known[id] {
			continue
		}
		lk, err := lockFile(ctx, m.snapLockPath(id), true, false)
		if err != nil {
			continue
		}
		// Re-read under the lock: a snapshot being recorded now is no orphan.
		if _, err := m.store.GetSnapshot(ctx, id); errors.Is(err, persist.ErrNotFound) {
			if err := removeSnapshotFiles(m.snapshotsDir(), id); err == nil {
				rep.Snapshots = append(rep.Snapshots, id)
			}
		}
		lk.unlock(false)
	}
}

func trimSuffix(err error, class error) string {
	return strings.TrimSuffix(err.Error(), ": "+class.Error())
}

func gib(b int64) string {
	if b <= 0 {
		return "no limit"
	}
	return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(float64(b)/(1<<30), 'f', 2, 64), "0"), ".") + " GiB"
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "No space left")
}
