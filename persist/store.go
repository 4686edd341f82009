// Package persist is the SQLite store behind boxlite-mcp: the boxes table,
// host state (the boot id used to detect reboots) and schema migrations.
//
// It uses github.com/ncruces/go-sqlite3 (SQLite compiled to Wasm, no cgo)
// through database/sql. The database runs in WAL mode with foreign keys on
// and a busy timeout, so several boxlite-mcp processes can share one file.
// Every write is one transaction (an IMMEDIATE one where it reads first),
// and every UPDATE or DELETE
// checks the rows it affected: a row that vanished is ErrNotFound.
//
// persist imports nothing else of boxlite-mcp. A Store is safe for
// concurrent use.
package persist

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
	_ "github.com/ncruces/go-sqlite3/driver" // registers "sqlite3"
)

// Error classes returned by the store. Callers test them with errors.Is.
var (
	// ErrNotFound: no row matches.
	ErrNotFound = errors.New("not found")
	// ErrNameTaken: the owner already has a box with that name.
	ErrNameTaken = errors.New("name already taken")
	// ErrAmbiguous: an id prefix matches more than one box.
	ErrAmbiguous = errors.New("ambiguous box reference")
	// ErrIncompatible: the file is not a boxlite database, or is newer than this code.
	ErrIncompatible = errors.New("incompatible database")
	// ErrFull: the disk holding the database is full (SQLITE_FULL).
	ErrFull = errors.New("database disk full")
	// ErrNoIDRange: every host id range is held by a box.
	ErrNoIDRange = errors.New("no free host id range")
)

// applicationID marks a SQLite file as ours ("boxL"); see PRAGMA application_id.
const applicationID = 0x626f784c

// busyTimeout is how long a statement waits for another process's write lock.
const busyTimeout = 10 * time.Second

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one embedded schema step; version N is file 000N_*.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) { return readMigrations(migrationFS) }

// readMigrations reads migrations/*.sql from fsys: names must start with
// their version, and versions must run 1, 2, 3… without gaps or repeats.
func readMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %q: name must start with a number", e.Name())
		}
		b, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %q: expected version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this code writes.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err) // embedded files are fixed at build time; a test covers this
	}
	return len(ms)
}

// Store is the box store. Create it with Open; Close it when done.
type Store struct {
	db    *sql.DB
	path  string
	now   func() time.Time
	stmts stmts
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open opens (creating if needed) the database at path, refuses a file that
// is not a boxlite database or is newer than this code, and migrates an older
// one in a single transaction. A refused file is never written to.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("database %s: %w", abs, err)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(on)")
	q.Add("_pragma", "synchronous(normal)")
	q.Set("_txlock", "immediate")
	dsn := (&url.URL{Scheme: "file", OmitHost: true, Path: abs, RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", abs, err)
	}
	s := &Store{db: db, path: abs, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error {
	s.closeStmts()
	return s.db.Close()
}

// init validates the file, turns on WAL and applies pending migrations.
func (s *Store) init(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	var appID, version, tables int
	err = s.db.QueryRowContext(ctx, `SELECT
		(SELECT application_id FROM pragma_application_id),
		(SELECT user_version FROM pragma_user_version),
		(SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%')`).
		Scan(&appID, &version, &tables)
	if err != nil {
		if errors.Is(err, sqlite3.NOTADB) || errors.Is(err, sqlite3.CORRUPT) {
			return fmt.Errorf("database %s is not a SQLite database or is corrupt (%v); move it away or pass another --home: %w",
				s.path, err, ErrIncompatible)
		}
		return fmt.Errorf("database %s: %w", s.path, err)
	}
	switch {
	case appID != applicationID && (appID != 0 || tables > 0):
		return fmt.Errorf("database %s belongs to another program (application_id %#x, %d tables); refusing to touch it: %w",
			s.path, appID, tables, ErrIncompatible)
	case version > len(ms):
		return fmt.Errorf("database %s has schema version %d but this boxlite-mcp knows only up to %d; upgrade boxlite-mcp: %w",
			s.path, version, len(ms), ErrIncompatible)
	}
	// WAL lets readers proceed while another process writes. The mode is
	// persistent in the file, so this is a no-op after the first open.
	if _, err := s.db.ExecContext(ctx, `PRAGMA journal_mode=WAL`); err != nil {
		return fmt.Errorf("database %s: enabling WAL: %w", s.path, err)
	}
	if version == len(ms) {
		return nil
	}
	return s.migrate(ctx, ms)
}

// migrate applies every migration above the current user_version in one
// IMMEDIATE transaction, re-reading the version inside it so two processes
// opening a fresh file at once do not both migrate.
func (s *Store) migrate(ctx context.Context, ms []migration) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("database %s: migrate: %w", s.path, err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("database %s: migrate: %w", s.path, err)
	}
	for _, m := range ms[min(version, len(ms)):] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("database %s: migration %s: %w", s.path, m.name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA application_id = %d; PRAGMA user_version = %d`, applicationID, len(ms))); err != nil {
		return fmt.Errorf("database %s: migrate: %w", s.path, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("database %s: migrate: %w", s.path, err)
	}
	return nil
}

// BootID returns the stored host boot id, or "" if none was stored.
func (s *Store) BootID(ctx context.Context) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM host_state WHERE key = 'boot_id'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SwapBootID stores id as the host boot id and returns the previous one ("" if none).
// Done in one transaction so exactly one of several racing processes sees the change.
func (s *Store) SwapBootID(ctx context.Context, id string) (prev string, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT value FROM host_state WHERE key = 'boot_id'`).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO host_state(key, value) VALUES('boot_id', ?)
			ON CONFLICT(key) DO UPDATE SET value = excluded.value`, id)
		return err
	})
	return prev, err
}

// classify marks disk-full errors with ErrFull.
func classify(err error) error {
	if err != nil && (errors.Is(err, sqlite3.FULL) || errors.Is(err, sqlite3.IOERR_WRITE)) {
		return fmt.Errorf("%w: %v", ErrFull, err)
	}
	return err
}

// tx runs fn in an IMMEDIATE transaction and commits it if fn returns nil.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	defer func() { err = classify(err) }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
