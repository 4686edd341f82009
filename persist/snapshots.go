package persist

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/oklog/ulid/v2"
)

// Snapshot statuses. Only ready snapshots are listed or resolved.
const (
	SnapshotCreating = "creating"
	SnapshotReady    = "ready"
	SnapshotDeleting = "deleting"
)

// More error classes.
var (
	// ErrOverQuota: the snapshots would take more space than the quota.
	ErrOverQuota = errors.New("snapshot quota exceeded")
	// ErrInUse: boxes still depend on the snapshot.
	ErrInUse = errors.New("in use")
)

// Snapshot is one row of the snapshots table.
type Snapshot struct {
	ID             string // lower-case ULID
	Owner          string
	Name           string // "" when unnamed
	BoxID          string // the box it was taken of
	Engine         string
	Image          string
	Status         string
	IncludesMemory bool
	Bytes          int64
	Spec           []byte   // the box's spec, JSON
	Files          []string // file names in the snapshot's directory
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

const snapshotColumns = `id, owner, name, box_id, engine, image, status, includes_memory, bytes, spec, files, created_at, updated_at`

// InsertSnapshot records a new snapshot (normally SnapshotCreating). ID and
// CreatedAt are filled in when zero. A name the owner already uses fails
// with ErrNameTaken. When maxBytes > 0 and the recorded snapshots already
// take that much, it fails with ErrOverQuota (checked in the same
// transaction).
func (s *Store) InsertSnapshot(ctx context.Context, sn *Snapshot, maxBytes int64) error {
	if sn.ID == "" {
		sn.ID = NewID()
	}
	if sn.CreatedAt.IsZero() {
		sn.CreatedAt = s.now()
	}
	sn.UpdatedAt = sn.CreatedAt
	if len(sn.Spec) == 0 {
		sn.Spec = []byte("{}")
	}
	files, _ := json.Marshal(nonNil(sn.Files))
	var total int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(bytes), 0) FROM snapshots`).Scan(&total); err != nil {
			return err
		}
		if maxBytes > 0 && total >= maxBytes {
			return ErrOverQuota
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO snapshots(`+snapshotColumns+`) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			sn.ID, sn.Owner, nullString(sn.Name), sn.BoxID, sn.Engine, sn.Image, sn.Status, sn.IncludesMemory, sn.Bytes,
			string(sn.Spec), string(files), sn.CreatedAt.UnixMilli(), sn.UpdatedAt.UnixMilli())
		return err
	})
	switch {
	case errors.Is(err, ErrOverQuota):
		return fmt.Errorf("snapshots already take %d bytes of %d: %w", total, maxBytes, ErrOverQuota)
	case errors.Is(err, sqlite3.CONSTRAINT_UNIQUE) || errors.Is(err, sqlite3.CONSTRAINT_PRIMARYKEY):
		if sn.Name != "" {
			var other string
			if s.db.QueryRowContext(ctx, `SELECT id FROM snapshots WHERE owner = ? AND name = ?`, sn.Owner, sn.Name).Scan(&other) == nil {
				return fmt.Errorf("name %q is used by snapshot %s: %w", sn.Name, other, ErrNameTaken)
			}
			return fmt.Errorf("name %q: %w", sn.Name, ErrNameTaken)
		}
		return fmt.Errorf("snapshot %s: id collision: %w", sn.ID, ErrNameTaken)
	}
	return err
}

// FinishSnapshot marks a creating snapshot ready with its files and size.
// When maxBytes > 0 and every snapshot together would take more than that,
// it fails with ErrOverQuota and leaves the row as it was.
func (s *Store) FinishSnapshot(ctx context.Context, id string, bytes int64, files []string, memory bool, maxBytes int64) error {
	fj, _ := json.Marshal(nonNil(files))
	var total int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(bytes), 0) FROM snapshots WHERE id != ?`, id).Scan(&total); err != nil {
			return err
		}
		if maxBytes > 0 && total+bytes > maxBytes {
			return ErrOverQuota
		}
		res, err := tx.ExecContext(ctx, `UPDATE snapshots SET status = ?, bytes = ?, files = ?, includes_memory = ?, updated_at = ?
			WHERE id = ? AND status = ?`, SnapshotReady, bytes, string(fj), memory, s.now().UnixMilli(), id, SnapshotCreating)
		return checkAffected(res, err)
	})
	if errors.Is(err, ErrOverQuota) {
		return fmt.Errorf("snapshot of %d bytes; snapshots already take %d of %d: %w", bytes, total, maxBytes, ErrOverQuota)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", id, err)
	}
	return nil
}

// GetSnapshot returns a snapshot by id, in any status.
func (s *Store) GetSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	return scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE id = ?`, strings.ToLower(id)))
}

// ResolveSnapshot finds owner's ready snapshot by reference: exact id, then
// exact name, then a unique id prefix of at least MinPrefix characters.
func (s *Store) ResolveSnapshot(ctx context.Context, owner, ref string) (*Snapshot, error) {
	if ref == "" {
		return nil, fmt.Errorf("empty snapshot reference: %w", ErrNotFound)
	}
	const ready = ` AND status = 'ready'`
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE id = ? AND owner = ?`+ready, strings.ToLower(ref), owner))
	if err == nil || !errors.Is(err, ErrNotFound) {
		return sn, err
	}
	sn, err = scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE owner = ? AND name = ?`+ready, owner, ref))
	if err == nil || !errors.Is(err, ErrNotFound) {
		return sn, err
	}
	prefix := strings.ToLower(ref)
	if len(prefix) < MinPrefix || len(prefix) > ulid.EncodedSize || strings.Trim(prefix, "0123456789abcdefghjkmnpqrstvwxyz") != "" {
		return nil, fmt.Errorf("no snapshot matches %q: %w", ref, ErrNotFound)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots
		WHERE owner = ? AND id >= ? AND id < ?`+ready+` ORDER BY id LIMIT 6`, owner, prefix, prefix+"~")
	if err != nil {
		return nil, err
	}
	list, err := scanSnapshots(rows)
	if err != nil {
		return nil, err
	}
	switch len(list) {
	case 0:
		return nil, fmt.Errorf("no snapshot matches %q: %w", ref, ErrNotFound)
	case 1:
		return list[0], nil
	}
	ids := make([]string, 0, len(list))
	for _, c := range list[:min(len(list), 5)] {
		ids = append(ids, c.ID)
	}
	return nil, fmt.Errorf("%q matches several snapshots (%s); use a longer prefix: %w", ref, strings.Join(ids, ", "), ErrAmbiguous)
}

// ListSnapshots returns owner's ready snapshots, oldest first; with owner
// "" every snapshot of every owner in any status (reconcile).
func (s *Store) ListSnapshots(ctx context.Context, owner string) ([]*Snapshot, error) {
	q, args := `SELECT `+snapshotColumns+` FROM snapshots ORDER BY created_at, id`, []any{}
	if owner != "" {
		q, args = `SELECT `+snapshotColumns+` FROM snapshots WHERE owner = ? AND status = 'ready' ORDER BY created_at, id`, []any{owner}
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanSnapshots(rows)
}

// SnapshotBytes is the space every recorded snapshot takes together.
func (s *Store) SnapshotBytes(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT coalesce(sum(bytes), 0) FROM snapshots`).Scan(&n)
	return n, err
}

// SnapshotDependants returns the ids of boxes that depend on snapshot id:
// those whose spec names it in from_snapshot.id and either says
// from_snapshot.backed (their disk is backed by its files) or has one of
// the given statuses (a box still being made from it).
func (s *Store) SnapshotDependants(ctx context.Context, id string, statuses []string) ([]string, error) {
	return dependants(ctx, s.db, id, statuses)
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func dependants(ctx context.Context, db querier, id string, statuses []string) ([]string, error) {
	cond, args := "0", []any{id}
	if len(statuses) > 0 {
		cond = "status IN (?" + strings.Repeat(",?", len(statuses)-1) + ")"
		for _, st := range statuses {
			args = append(args, st)
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT id FROM boxes WHERE json_extract(spec, '$.from_snapshot.id') = ?
		AND (coalesce(json_extract(spec, '$.from_snapshot.backed'), 0) OR `+cond+`) ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var b string
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		ids = append(ids, b)
	}
	return ids, rows.Err()
}

// MarkSnapshotDeleting moves a ready snapshot to SnapshotDeleting unless a
// box depends on it (see SnapshotDependants), in one transaction: then it
// fails with ErrInUse naming the boxes. A snapshot already deleting stays so.
func (s *Store) MarkSnapshotDeleting(ctx context.Context, id string, statuses []string) error {
	var deps []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		// The read runs inside the IMMEDIATE transaction: no box can be
		// recorded from the snapshot between the check and the update.
		if deps, err = dependants(ctx, tx, id, statuses); err != nil {
			return err
		}
		if len(deps) > 0 {
			return ErrInUse
		}
		res, err := tx.ExecContext(ctx, `UPDATE snapshots SET status = ?, updated_at = ? WHERE id = ? AND status != ?`,
			SnapshotDeleting, s.now().UnixMilli(), id, SnapshotCreating)
		return checkAffected(res, err)
	})
	if errors.Is(err, ErrInUse) {
		return fmt.Errorf("boxes %s depend on snapshot %s: %w", strings.Join(deps, ", "), id, ErrInUse)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", id, err)
	}
	return nil
}

// DeleteSnapshot removes a snapshot's row.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
	if err = classify(checkAffected(res, err)); err != nil {
		return fmt.Errorf("snapshot %s: %w", id, err)
	}
	return nil
}

func scanSnapshot(row scanner) (*Snapshot, error) {
	var (
		sn               Snapshot
		name             sql.NullString
		spec, files      string
		created, updated int64
	)
	err := row.Scan(&sn.ID, &sn.Owner, &name, &sn.BoxID, &sn.Engine, &sn.Image, &sn.Status, &sn.IncludesMemory, &sn.Bytes,
		&spec, &files, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	sn.Name = name.String
	sn.Spec = []byte(spec)
	if err := json.Unmarshal([]byte(files), &sn.Files); err != nil {
		return nil, fmt.Errorf("snapshot %s: files: %w", sn.ID, err)
	}
	sn.CreatedAt = time.UnixMilli(created)
	sn.UpdatedAt = time.UnixMilli(updated)
	return &sn, nil
}

func scanSnapshots(rows *sql.Rows) ([]*Snapshot, error) {
	defer rows.Close()
	var out []*Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
