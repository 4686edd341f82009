package persist

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// The warm pool's records. A pooled box is a row owned by PoolOwner (no
// owner at all: no token maps to the empty owner, so no client ever sees
// it) in the status the sandbox package names; Claim hands one to an owner.
// The pools table keeps, per engine, the target of the last server that
// filled the pool and the last refill error, for doctor.

// PoolOwner is the owner of pooled boxes: nobody.
const PoolOwner = ""

// PoolSelect says which pooled boxes a claim may take.
type PoolSelect struct {
	Status  string // the pooled status
	Engine  string
	Image   string
	ImageID string // the image identity the box's spec records ($.image_id)
}

// Claim hands the oldest pooled box matching sel to a new owner in one
// IMMEDIATE transaction. fn gets the row and the usage per q (q.Owner is the
// new owner) and sets what the claim changes: owner, name, status, reason,
// spec, times, idle timeout and expiry; an error from fn aborts the claim
// and is returned. The row is written with an UPDATE conditional on it
// still being unowned and pooled, so no two claimers (other processes
// included) ever take the same box. No matching box: ErrNotFound; a name
// the owner already uses: ErrNameTaken, and the box stays pooled.
func (s *Store) Claim(ctx context.Context, sel PoolSelect, q UsageQuery, fn func(*Box, Usage) error) (*Box, error) {
	var out *Box
	var fnErr error
	name := ""
	err := s.tx(ctx, func(tx *sql.Tx) error {
		b, err := scanBox(tx.QueryRowContext(ctx, `SELECT `+boxColumns+` FROM boxes
			WHERE owner = ? AND status = ? AND engine = ? AND image = ? AND json_extract(spec, '$.image_id') = ?
			ORDER BY id LIMIT 1`, PoolOwner, sel.Status, sel.Engine, sel.Image, sel.ImageID))
		if err != nil {
			return err
		}
		u, err := usage(ctx, tx, q, "")
		if err != nil {
			return err
		}
		if fnErr = fn(b, u); fnErr != nil {
			return fnErr
		}
		if b.Owner == PoolOwner {
			return errors.New("a claim must give the box an owner")
		}
		name = b.Name
		b.UpdatedAt = s.now()
		res, err := tx.ExecContext(ctx, `UPDATE boxes SET owner = ?, name = ?, status = ?, status_reason = ?, spec = ?,
			created_at = ?, updated_at = ?, last_used_at = ?, idle_timeout_s = ?, expires_at = ?
			WHERE id = ? AND owner = ? AND status = ?`,
			b.Owner, nullString(b.Name), b.Status, b.StatusReason, string(b.Spec), b.CreatedAt.UnixMilli(), b.UpdatedAt.UnixMilli(),
			b.LastUsedAt.UnixMilli(), int64(b.IdleTimeout/time.Second), unixMilliOrZero(b.ExpiresAt), b.ID, PoolOwner, sel.Status)
		if err := checkAffected(res, err); err != nil {
			return err
		}
		out = b
		return nil
	})
	switch {
	case fnErr != nil:
		return nil, fnErr
	case errors.Is(err, sqlite3.CONSTRAINT_UNIQUE):
		if other, gerr := s.byName(ctx, q.Owner, name); gerr == nil {
			return nil, fmt.Errorf("name %q is used by box %s: %w", name, other.ID, ErrNameTaken)
		}
		return nil, fmt.Errorf("name %q: %w", name, ErrNameTaken)
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("no pooled %s box of image %s: %w", sel.Engine, sel.Image, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("claim a pooled box: %w", err)
	}
	return out, nil
}

// PoolBoxes returns every box of PoolOwner (all engines, all statuses),
// oldest first.
func (s *Store) PoolBoxes(ctx context.Context) ([]*Box, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+boxColumns+` FROM boxes WHERE owner = ? ORDER BY id`, PoolOwner)
	if err != nil {
		return nil, fmt.Errorf("list pooled boxes: %w", err)
	}
	return scanBoxes(rows)
}

// Pool is what the home records about one engine's pool.
type Pool struct {
	Engine      string
	Target      int       // the last target a server set
	LastError   string    // the last refill error ("" once a refill succeeds)
	LastErrorAt time.Time // zero: none
	UpdatedAt   time.Time
	// Counts of PoolOwner's boxes of the engine by status.
	Boxes map[string]int
}

// SetPoolTarget records engine's pool target (a server starting with --pool).
func (s *Store) SetPoolTarget(ctx context.Context, engine string, target int) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO pools(engine, target, updated_at) VALUES(?, ?, ?)
		ON CONFLICT(engine) DO UPDATE SET target = excluded.target, updated_at = excluded.updated_at`,
		engine, target, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("pool %s: %w", engine, classify(err))
	}
	return nil
}

// SetPoolError records the outcome of a refill of engine's pool: msg is the
// error, "" a success (which clears the error).
func (s *Store) SetPoolError(ctx context.Context, engine, msg string) error {
	now := s.now().UnixMilli()
	at := now
	if msg == "" {
		at = 0
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO pools(engine, last_error, last_error_at, updated_at) VALUES(?, ?, ?, ?)
		ON CONFLICT(engine) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at,
		updated_at = excluded.updated_at`, engine, msg, at, now)
	if err != nil {
		return fmt.Errorf("pool %s: %w", engine, classify(err))
	}
	return nil
}

// Pools returns every engine's pool record with the counts of its boxes,
// by engine; an engine with pooled boxes but no record is listed too.
func (s *Store) Pools(ctx context.Context) ([]*Pool, error) {
	byEngine := map[string]*Pool{}
	var order []string
	get := func(engine string) *Pool {
		p := byEngine[engine]
		if p == nil {
			p = &Pool{Engine: engine, Boxes: map[string]int{}}
			byEngine[engine] = p
			order = append(order, engine)
		}
		return p
	}
	rows, err := s.db.QueryContext(ctx, `SELECT engine, target, last_error, last_error_at, updated_at FROM pools ORDER BY engine`)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	for rows.Next() {
		var engine, msg string
		var target int
		var at, updated int64
		if err := rows.Scan(&engine, &target, &msg, &at, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		p := get(engine)
		p.Target, p.LastError, p.UpdatedAt = target, msg, time.UnixMilli(updated)
		if at > 0 {
			p.LastErrorAt = time.UnixMilli(at)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT engine, status, count(*) FROM boxes WHERE owner = ? GROUP BY engine, status ORDER BY engine`, PoolOwner)
	if err != nil {
		return nil, fmt.Errorf("count pooled boxes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var engine, status string
		var n int
		if err := rows.Scan(&engine, &status, &n); err != nil {
			return nil, err
		}
		get(engine).Boxes[status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]*Pool, 0, len(order))
	for _, e := range order {
		out = append(out, byEngine[e])
	}
	return out, nil
}
