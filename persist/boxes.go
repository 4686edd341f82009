package persist

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/oklog/ulid/v2"
)

// Box is one row of the boxes table. Status values are owned by the sandbox
// package; the store keeps them as opaque strings.
type Box struct {
	ID           string // lower-case ULID
	Owner        string
	Name         string // "" when unnamed
	Engine       string
	Image        string
	Status       string
	StatusReason string
	Spec         []byte // resource spec, JSON
	EngineState  []byte // engine reattach handle, JSON; empty when none
	CreatedAt    time.Time
	UpdatedAt    time.Time
	LastUsedAt   time.Time
	IdleTimeout  time.Duration // 0: the server default
	ExpiresAt    time.Time     // zero: never
	// IDRange is the box's range of host ids, allocated by Insert: the
	// lowest index no other box holds, below MaxIDRanges.
	IDRange int
}

// MaxIDRanges is the number of id ranges the store hands out (the CHECK on
// boxes.id_range); Insert fails with ErrNoIDRange when every one is taken.
const MaxIDRanges = 16384

// NewID returns a fresh lower-case ULID.
func NewID() string { return strings.ToLower(ulid.Make().String()) }

const boxColumns = `id, owner, name, engine, image, status, status_reason, spec, engine_state,
	created_at, updated_at, last_used_at, idle_timeout_s, expires_at, coalesce(id_range, -1)`

// insertColumns are boxColumns without id_range, which Insert allocates.
const insertColumns = `id, owner, name, engine, image, status, status_reason, spec, engine_state,
	created_at, updated_at, last_used_at, idle_timeout_s, expires_at`

// freeIDRange is the lowest id range no box holds. It never visits the
// rows one by one: with t = max(id_range)+1 (the UNIQUE index's last
// entry), the ranges are dense when the table holds t rows (count(*) reads
// the b-tree's pages, not its rows), and the answer is t. Otherwise a
// binary search finds the first gap below t: [lo, hi) always holds a free
// range and everything below lo is held; one step counts the index
// entries in the lower half (held), the next moves lo or hi, so a search
// reads about t index entries in all. Every row has a range (Insert
// allocates one, migration 0003 gave the older rows theirs); a row without
// one could only make the answer a free range above the lowest. The
// UNIQUE index and the CHECK make a collision or an exhausted space an
// error, never a shared range; the search runs inside the INSERT
// statement, one write transaction, so concurrent inserts (other processes
// included) serialise on SQLite's write lock.
var freeIDRange = strings.ReplaceAll(`(WITH RECURSIVE
	top(t) AS (SELECT coalesce(max(id_range), -1) + 1 FROM boxes WHERE id_range IS NOT NULL),
	gap(lo, hi, held) AS (
		SELECT 0, t, NULL FROM top WHERE (SELECT count(*) FROM boxes) < t
		UNION ALL
		SELECT CASE WHEN held IS NULL OR held < MID - lo THEN lo ELSE MID END,
			CASE WHEN held IS NOT NULL AND held < MID - lo THEN MID ELSE hi END,
			CASE WHEN held IS NULL THEN (SELECT count(*) FROM boxes WHERE id_range >= lo AND id_range < MID) END
		FROM gap WHERE hi - lo > 1)
	SELECT coalesce((SELECT lo FROM gap WHERE hi - lo = 1), (SELECT t FROM top)))`, "MID", "((lo + hi) / 2)")

// MinPrefix is the shortest id prefix Resolve accepts.
const MinPrefix = 4

// Insert stores a new box. ID, CreatedAt, UpdatedAt and LastUsedAt are filled
// in when zero. A name the owner already uses fails with ErrNameTaken, naming
// the existing box's id; the UNIQUE index decides, not a prior lookup.
func (s *Store) Insert(ctx context.Context, b *Box) error {
	return s.InsertAdmitted(ctx, b, UsageQuery{}, nil)
}

// InsertAdmitted is Insert with admission: when admit is not nil it is
// called with the usage of the boxes already recorded (per q), inside the
// same IMMEDIATE transaction as the insert, so no other process can admit
// a box in between; an error from admit aborts the insert and is returned.
func (s *Store) InsertAdmitted(ctx context.Context, b *Box, q UsageQuery, admit func(Usage) error) error {
	if b.ID == "" {
		b.ID = NewID()
	}
	now := s.now()
	if b.CreatedAt.IsZero() {
		b.CreatedAt = now
	}
	b.UpdatedAt = b.CreatedAt
	if b.LastUsedAt.IsZero() {
		b.LastUsedAt = b.CreatedAt
	}
	if len(b.Spec) == 0 {
		b.Spec = []byte("{}")
	}
	insert := `INSERT INTO boxes(` + insertColumns + `, id_range) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,` + freeIDRange + `) RETURNING id_range`
	var err error
	if admit == nil {
		// One statement is its own transaction: no BEGIN/COMMIT round trips.
		err = s.db.QueryRowContext(ctx, insert, b.values()...).Scan(&b.IDRange)
	} else {
		var admitErr error
		err = s.tx(ctx, func(tx *sql.Tx) error {
			u, err := usage(ctx, tx, q, "")
			if err != nil {
				return err
			}
			if admitErr = admit(u); admitErr != nil {
				return admitErr
			}
			return tx.QueryRowContext(ctx, insert, b.values()...).Scan(&b.IDRange)
		})
		if admitErr != nil {
			return admitErr
		}
	}
	if errors.Is(err, sqlite3.CONSTRAINT_CHECK) {
		return fmt.Errorf("every one of the %d host id ranges is held by a box: %w", MaxIDRanges, ErrNoIDRange)
	}
	if errors.Is(err, sqlite3.CONSTRAINT_UNIQUE) || errors.Is(err, sqlite3.CONSTRAINT_PRIMARYKEY) {
		if b.Name != "" {
			if other, gerr := s.byName(ctx, b.Owner, b.Name); gerr == nil {
				return fmt.Errorf("name %q is used by box %s: %w", b.Name, other.ID, ErrNameTaken)
			}
			return fmt.Errorf("name %q: %w", b.Name, ErrNameTaken)
		}
		return fmt.Errorf("box %s: id collision: %w", b.ID, ErrNameTaken)
	}
	if err != nil {
		return fmt.Errorf("insert box: %w", classify(err))
	}
	return nil
}

// Get returns the box with exactly this id, whoever owns it.
func (s *Store) Get(ctx context.Context, id string) (*Box, error) {
	b, err := scanBox(s.queryRow(ctx, `SELECT `+boxColumns+` FROM boxes WHERE id = ?`, strings.ToLower(id)))
	if err != nil {
		return nil, fmt.Errorf("box %s: %w", id, err)
	}
	return b, nil
}

func (s *Store) byName(ctx context.Context, owner, name string) (*Box, error) {
	return scanBox(s.queryRow(ctx, `SELECT `+boxColumns+` FROM boxes WHERE owner = ? AND name = ?`, owner, name))
}

// Resolve finds owner's box by reference: exact id, then exact name, then a
// unique id prefix of at least MinPrefix characters. An ambiguous prefix is
// ErrAmbiguous and the message lists the candidates.
func (s *Store) Resolve(ctx context.Context, owner, ref string) (*Box, error) {
	if ref == "" {
		return nil, fmt.Errorf("empty box reference: %w", ErrNotFound)
	}
	b, err := scanBox(s.queryRow(ctx, `SELECT `+boxColumns+` FROM boxes WHERE id = ? AND owner = ?`, strings.ToLower(ref), owner))
	if err == nil || !errors.Is(err, ErrNotFound) {
		return b, err
	}
	if b, err := s.byName(ctx, owner, ref); err == nil || !errors.Is(err, ErrNotFound) {
		return b, err
	}
	prefix := strings.ToLower(ref)
	if len(prefix) < MinPrefix || len(prefix) > ulid.EncodedSize || strings.Trim(prefix, "0123456789abcdefghjkmnpqrstvwxyz") != "" {
		return nil, fmt.Errorf("no box matches %q: %w", ref, ErrNotFound)
	}
	// The range scan uses the primary key; '~' sorts after every ULID character.
	rows, err := s.db.QueryContext(ctx, `SELECT `+boxColumns+` FROM boxes
		WHERE owner = ? AND id >= ? AND id < ? ORDER BY id LIMIT 6`, owner, prefix, prefix+"~")
	if err != nil {
		return nil, err
	}
	boxes, err := scanBoxes(rows)
	if err != nil {
		return nil, err
	}
	switch len(boxes) {
	case 0:
		return nil, fmt.Errorf("no box matches %q: %w", ref, ErrNotFound)
	case 1:
		return boxes[0], nil
	}
	ids := make([]string, 0, len(boxes))
	for _, c := range boxes[:min(len(boxes), 5)] {
		ids = append(ids, c.ID)
	}
	more := ""
	if len(boxes) > 5 {
		more = ", …"
	}
	return nil, fmt.Errorf("%q matches several boxes (%s%s); use a longer prefix: %w", ref, strings.Join(ids, ", "), more, ErrAmbiguous)
}

// Filter selects boxes for List. Zero fields match everything.
type Filter struct {
	Owner  string
	Status string
}

// List returns the matching boxes, oldest first.
func (s *Store) List(ctx context.Context, f Filter) ([]*Box, error) {
	q := `SELECT ` + boxColumns + ` FROM boxes WHERE 1=1`
	var args []any
	if f.Owner != "" {
		q += ` AND owner = ?`
		args = append(args, f.Owner)
	}
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, f.Status)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list boxes: %w", err)
	}
	return scanBoxes(rows)
}

// Update reads box id, lets fn change it, and writes it back, all in one
// IMMEDIATE transaction: no other process can write between the read and the
// write. If fn returns an error nothing is written and that error is returned.
// A box deleted meanwhile gives ErrNotFound. The id, owner and created time
// cannot change; UpdatedAt is set by the store.
func (s *Store) Update(ctx context.Context, id string, fn func(*Box) error) (*Box, error) {
	return s.UpdateAdmitted(ctx, id, UsageQuery{}, func(b *Box, _ Usage) error { return fn(b) })
}

// UpdateAdmitted is Update that also hands fn the usage of every other box
// (per q), read in the same transaction: a restart is admitted against
// what runs at that very moment.
func (s *Store) UpdateAdmitted(ctx context.Context, id string, q UsageQuery, fn func(*Box, Usage) error) (*Box, error) {
	var out *Box
	err := s.tx(ctx, func(tx *sql.Tx) error {
		b, err := scanBox(tx.QueryRowContext(ctx, `SELECT `+boxColumns+` FROM boxes WHERE id = ?`, id))
		if err != nil {
			return err
		}
		var u Usage
		if q.Live != nil {
			if u, err = usage(ctx, tx, q, id); err != nil {
				return err
			}
		}
		if err := fn(b, u); err != nil {
			return err
		}
		b.UpdatedAt = s.now()
		res, err := tx.ExecContext(ctx, `UPDATE boxes SET name = ?, engine = ?, image = ?, status = ?, status_reason = ?,
			spec = ?, engine_state = ?, updated_at = ?, last_used_at = ?, idle_timeout_s = ?, expires_at = ? WHERE id = ?`,
			nullString(b.Name), b.Engine, b.Image, b.Status, b.StatusReason, string(b.Spec), string(b.EngineState),
			b.UpdatedAt.UnixMilli(), b.LastUsedAt.UnixMilli(), int64(b.IdleTimeout/time.Second), unixMilliOrZero(b.ExpiresAt), id)
		if err := checkAffected(res, err); err != nil {
			return err
		}
		out = b
		return nil
	})
	if errors.Is(err, sqlite3.CONSTRAINT_UNIQUE) {
		return nil, fmt.Errorf("box %s: %w", id, ErrNameTaken)
	}
	if err != nil {
		return nil, fmt.Errorf("box %s: %w", id, err)
	}
	return out, nil
}

// Touch records that the box was used at t. It never moves last_used_at back.
func (s *Store) Touch(ctx context.Context, id string, t time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE boxes SET last_used_at = max(last_used_at, ?) WHERE id = ?`, t.UnixMilli(), id)
	err = classify(checkAffected(res, err))
	if err != nil {
		return fmt.Errorf("box %s: %w", id, err)
	}
	return nil
}

// Delete removes the box row. A missing row is ErrNotFound.
func (s *Store) Delete(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM boxes WHERE id = ?`, id)
	err = classify(checkAffected(res, err))
	if err != nil {
		return fmt.Errorf("box %s: %w", id, err)
	}
	return nil
}

func checkAffected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (b *Box) values() []any {
	return []any{b.ID, b.Owner, nullString(b.Name), b.Engine, b.Image, b.Status, b.StatusReason,
		string(b.Spec), string(b.EngineState), b.CreatedAt.UnixMilli(), b.UpdatedAt.UnixMilli(),
		b.LastUsedAt.UnixMilli(), int64(b.IdleTimeout / time.Second), unixMilliOrZero(b.ExpiresAt)}
}

type scanner interface{ Scan(dest ...any) error }

func scanBox(row scanner) (*Box, error) {
	var (
		b                                     Box
		name                                  sql.NullString
		spec, state                           string
		created, updated, used, idle, expires int64
	)
	err := row.Scan(&b.ID, &b.Owner, &name, &b.Engine, &b.Image, &b.Status, &b.StatusReason, &spec, &state,
		&created, &updated, &used, &idle, &expires, &b.IDRange)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	b.Name = name.String
	b.Spec = []byte(spec)
	if state != "" {
		b.EngineState = []byte(state)
	}
	b.CreatedAt = time.UnixMilli(created)
	b.UpdatedAt = time.UnixMilli(updated)
	b.LastUsedAt = time.UnixMilli(used)
	b.IdleTimeout = time.Duration(idle) * time.Second
	if expires > 0 {
		b.ExpiresAt = time.UnixMilli(expires)
	}
	return &b, nil
}

func scanBoxes(rows *sql.Rows) ([]*Box, error) {
	defer rows.Close()
	var out []*Box
	for rows.Next() {
		b, err := scanBox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func unixMilliOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
