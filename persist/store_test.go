package persist

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "boxlite.db")
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newBox(owner, name string) *Box {
	return &Box{Owner: owner, Name: name, Engine: "fake", Image: "default", Status: "creating"}
}

func TestOpenFreshSetsSchema(t *testing.T) {
	s := openTest(t, "")
	var ver, app int
	var mode string
	if err := s.db.QueryRow(`SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM pragma_application_id), (SELECT journal_mode FROM pragma_journal_mode)`).Scan(&ver, &app, &mode); err != nil {
		t.Fatal(err)
	}
	if ver != SchemaVersion() || app != applicationID || mode != "wal" {
		t.Fatalf("version=%d app=%#x mode=%s; want %d %#x wal", ver, app, mode, SchemaVersion(), applicationID)
	}
	if SchemaVersion() < 2 {
		t.Fatalf("SchemaVersion = %d", SchemaVersion())
	}
}

// TestMigrateFromV1 builds a version-1 database by hand (as an older
// boxlite-mcp left it, with a row in it) and checks Open migrates it and keeps the row.
func TestMigrateFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := migrations()
	if _, err := db.Exec(ms[0].sql); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA application_id=%d; PRAGMA user_version=1;
		INSERT INTO boxes(id, owner, name, engine, image, status, created_at, updated_at)
		VALUES('01jold0000000000000000000a', 'local', 'old', 'jail', 'default', 'stopped', 1000, 2000)`, applicationID)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openTest(t, path)
	b, err := s.Resolve(context.Background(), "local", "old")
	if err != nil {
		t.Fatalf("Resolve after migration: %v", err)
	}
	if b.LastUsedAt.UnixMilli() != 2000 || b.IdleTimeout != 0 || !b.ExpiresAt.IsZero() {
		t.Fatalf("migrated columns: last_used=%v idle=%v expires=%v", b.LastUsedAt, b.IdleTimeout, b.ExpiresAt)
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(path string) // writes a file at path
		want  string            // substring of the error
	}{
		{"garbage file", func(p string) {
			os.WriteFile(p, bytes.Repeat([]byte("not a database "), 500), 0o600)
		}, "not a SQLite database"},
		{"foreign sqlite db", func(p string) {
			db, _ := sql.Open("sqlite3", "file:"+p)
			db.Exec(`CREATE TABLE customers(id INTEGER)`)
			db.Close()
		}, "belongs to another program"},
		{"newer schema", func(p string) {
			db, _ := sql.Open("sqlite3", "file:"+p)
			db.Exec(fmt.Sprintf(`PRAGMA application_id=%d; PRAGMA user_version=99; CREATE TABLE future(x)`, applicationID))
			db.Close()
		}, "schema version 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			tt.setup(path)
			before, _ := os.ReadFile(path)
			_, err := Open(context.Background(), path)
			if err == nil || !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v; want ErrIncompatible containing %q and the path", err, tt.want)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("refused file was modified")
			}
			if _, err := os.Stat(path + "-wal"); err == nil {
				if fi, _ := os.Stat(path + "-wal"); fi.Size() > 0 {
					t.Fatal("refused file got a non-empty WAL")
				}
			}
		})
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	mk := func(id, owner, name string) {
		b := newBox(owner, name)
		b.ID = id
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	mk("01aaaa00000000000000000001", "alice", "web")
	mk("01aaaa00000000000000000002", "alice", "")
	mk("01bbbb00000000000000000003", "alice", "01aaaa00000000000000000002") // a name equal to another id
	mk("01cccc00000000000000000004", "bob", "web")
	mk("01dddd00000000000000000005", "alice", "01dd")

	tests := []struct {
		owner, ref string
		want       string // id, or "" for an error
		err        error
	}{
		{"alice", "01aaaa00000000000000000001", "01aaaa00000000000000000001", nil}, // exact id
		{"alice", "01AAAA00000000000000000001", "01aaaa00000000000000000001", nil}, // upper-case id
		{"alice", "web", "01aaaa00000000000000000001", nil},                        // name
		{"bob", "web", "01cccc00000000000000000004", nil},                          // name is per owner
		{"alice", "01aaaa00000000000000000002", "01aaaa00000000000000000002", nil}, // id wins over an equal name
		{"alice", "01bb", "01bbbb00000000000000000003", nil},                       // unique prefix
		{"alice", "01dd", "01dddd00000000000000000005", nil},                       // name wins over prefix (same box here)
		{"alice", "01aa", "", ErrAmbiguous},                                        // ambiguous prefix
		{"alice", "01c", "", ErrNotFound},                                          // too short
		{"alice", "01cccc", "", ErrNotFound},                                       // another owner's box
		{"bob", "01aaaa00000000000000000001", "", ErrNotFound},                     // another owner's id
		{"alice", "nope", "", ErrNotFound},
		{"alice", "", "", ErrNotFound},
		{"alice", "01a%", "", ErrNotFound}, // not base32: no LIKE-style surprises
	}
	for _, tt := range tests {
		b, err := s.Resolve(ctx, tt.owner, tt.ref)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Resolve(%s, %q) err = %v; want %v", tt.owner, tt.ref, err, tt.err)
			}
			continue
		}
		if err != nil || b.ID != tt.want {
			t.Errorf("Resolve(%s, %q) = %v, %v; want %s", tt.owner, tt.ref, b, err, tt.want)
		}
	}
	_, err := s.Resolve(ctx, "alice", "01aa")
	if !strings.Contains(err.Error(), "01aaaa00000000000000000001") || !strings.Contains(err.Error(), "01aaaa00000000000000000002") {
		t.Errorf("ambiguous error does not list candidates: %v", err)
	}
}

func TestInsertNameTakenNamesExisting(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	a := newBox("local", "dup")
	if err := s.Insert(ctx, a); err != nil {
		t.Fatal(err)
	}
	err := s.Insert(ctx, newBox("local", "dup"))
	if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), a.ID) {
		t.Fatalf("second insert = %v; want ErrNameTaken naming %s", err, a.ID)
	}
	// Unnamed boxes never collide; the same name for another owner is fine.
	for _, b := range []*Box{newBox("local", ""), newBox("local", ""), newBox("other", "dup")} {
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUpdateTouchDeleteCheckRows(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_000_000)
	s := openTest(t, "")
	s.now = func() time.Time { return now }
	b := newBox("local", "x")
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	got, err := s.Update(ctx, b.ID, func(b *Box) error {
		b.Status, b.StatusReason, b.EngineState = "running", "", []byte(`{"pid":1}`)
		b.IdleTimeout, b.ExpiresAt = 90*time.Second, now.Add(time.Hour)
		return nil
	})
	if err != nil || got.Status != "running" || !got.UpdatedAt.Equal(now) {
		t.Fatalf("Update = %+v, %v", got, err)
	}
	re, _ := s.Get(ctx, b.ID)
	if string(re.EngineState) != `{"pid":1}` || re.IdleTimeout != 90*time.Second || !re.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("reread = %+v", re)
	}
	// fn's error aborts the write.
	boom := errors.New("boom")
	if _, err := s.Update(ctx, b.ID, func(b *Box) error { b.Status = "failed"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("Update err = %v", err)
	}
	if re, _ := s.Get(ctx, b.ID); re.Status != "running" {
		t.Fatal("aborted update was written")
	}
	// Touch never goes back in time.
	if err := s.Touch(ctx, b.ID, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.Touch(ctx, b.ID, now)
	if re, _ := s.Get(ctx, b.ID); !re.LastUsedAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("LastUsedAt = %v", re.LastUsedAt)
	}
	if err := s.Delete(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	// Everything on a vanished row is ErrNotFound, not silence.
	if _, err := s.Update(ctx, b.ID, func(*Box) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update vanished = %v", err)
	}
	if err := s.Touch(ctx, b.ID, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("Touch vanished = %v", err)
	}
	if err := s.Delete(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete vanished = %v", err)
	}
	if _, err := s.Get(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get vanished = %v", err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	for i, st := range []string{"running", "stopped", "running"} {
		b := newBox("o"+strconv.Itoa(i%2), "")
		b.Status = st
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		f    Filter
		want int
	}{{Filter{}, 3}, {Filter{Owner: "o0"}, 2}, {Filter{Status: "running"}, 2}, {Filter{Owner: "o1", Status: "running"}, 0}} {
		got, err := s.List(ctx, tt.f)
		if err != nil || len(got) != tt.want {
			t.Errorf("List(%+v) = %d, %v; want %d", tt.f, len(got), err, tt.want)
		}
	}
}

func TestBootID(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	if id, err := s.BootID(ctx); id != "" || err != nil {
		t.Fatalf("BootID fresh = %q, %v", id, err)
	}
	for _, tt := range []struct{ set, prev string }{{"a", ""}, {"a", "a"}, {"b", "a"}} {
		prev, err := s.SwapBootID(ctx, tt.set)
		if err != nil || prev != tt.prev {
			t.Fatalf("SwapBootID(%q) = %q, %v; want %q", tt.set, prev, err, tt.prev)
		}
	}
}

// TestConcurrentNamesInProcess: many goroutines, two Stores on one file,
// racing for the same names. Each name is won exactly once.
func TestConcurrentNamesInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "boxlite.db")
	stores := []*Store{openTest(t, path), openTest(t, path)}
	// 16 writers at a time race for the names: enough contention to catch
	// a check-then-insert, without turning the test into a measure of how
	// long 400 queued writers wait for SQLite's lock on a loaded machine
	// (the busy timeout is 10 s; CI failed on that, not on a name).
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				err := stores[i%2].Insert(context.Background(), newBox("local", fmt.Sprintf("n%d", i%50)))
				if err != nil && !errors.Is(err, ErrNameTaken) {
					errs <- err
				}
			}
		}()
	}
	for i := range 400 {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	boxes, _ := stores[0].List(context.Background(), Filter{})
	if len(boxes) != 50 {
		t.Fatalf("%d boxes; want 50", len(boxes))
	}
}

// TestTwoProcessesCollidingNames re-executes the test binary twice; both
// processes create 200 boxes with names from a pool of 100 against one file.
// Every name must exist exactly once, and the only error allowed is "name taken".
func TestTwoProcessesCollidingNames(t *testing.T) {
	if path := os.Getenv("PERSIST_TEST_CHILD_DB"); path != "" {
		childInsert(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "boxlite.db")
	openTest(t, path) // create and migrate once, as a server would have
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTwoProcessesCollidingNames$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PERSIST_TEST_CHILD_DB="+path)
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i])
		}
	}
	s := openTest(t, path)
	boxes, err := s.List(context.Background(), Filter{Owner: "local"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	ranges := map[int]string{}
	for _, b := range boxes {
		seen[b.Name]++
		if other, dup := ranges[b.IDRange]; dup || b.IDRange < 0 {
			t.Errorf("box %s got id range %d (also held by %q)", b.ID, b.IDRange, other)
		}
		ranges[b.IDRange] = b.ID
	}
	if len(boxes) != 100 || len(seen) != 100 {
		t.Fatalf("%d rows, %d names; want 100 of each", len(boxes), len(seen))
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("name %s stored %d times", n, c)
		}
	}
}

func childInsert(t *testing.T, path string) {
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	taken := 0
	for i := range 200 {
		err := s.Insert(context.Background(), newBox("local", fmt.Sprintf("name-%03d", i%100)))
		switch {
		case errors.Is(err, ErrNameTaken):
			taken++
		case err != nil:
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if taken < 100 {
		t.Fatalf("only %d name-taken errors; each name is tried twice here", taken)
	}
}

// TestMigrationSetsAreChecked: the embedded set is valid, and a set with a
// gap, a repeat or a badly named file is refused (not silently applied).
func TestMigrationSetsAreChecked(t *testing.T) {
	if ms, err := migrations(); err != nil || len(ms) != SchemaVersion() {
		t.Fatalf("embedded migrations: %d, %v", len(ms), err)
	}
	for name, files := range map[string][]string{
		"gap":      {"0001_a.sql", "0003_c.sql"},
		"repeat":   {"0001_a.sql", "0001_b.sql"},
		"bad name": {"0001_a.sql", "two_b.sql"},
		"no one":   {"0002_b.sql"},
	} {
		fsys := fstest.MapFS{}
		for _, f := range files {
			fsys["migrations/"+f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
		}
		if _, err := readMigrations(fsys); err == nil {
			t.Errorf("%s (%v) accepted", name, files)
		}
	}
	ok := fstest.MapFS{"migrations/0002_b.sql": {Data: []byte("b")}, "migrations/0001_a.sql": {Data: []byte("a")}}
	if ms, err := readMigrations(ok); err != nil || len(ms) != 2 || ms[0].sql != "a" {
		t.Fatalf("a dense set: %+v, %v", ms, err)
	}
}

// TestIDRanges: every box gets the lowest id range no other box holds, a
// deleted box's range is handed out again, and when every range is held
// Insert fails with ErrNoIDRange instead of sharing one.
func TestIDRanges(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	var got []int
	var ids []string
	for i := range 4 {
		b := newBox("local", fmt.Sprintf("b%d", i))
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
		got, ids = append(got, b.IDRange), append(ids, b.ID)
	}
	if fmt.Sprint(got) != "[0 1 2 3]" {
		t.Fatalf("ranges %v; want [0 1 2 3]", got)
	}
	if err := s.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	b := newBox("local", "again")
	if err := s.Insert(ctx, b); err != nil || b.IDRange != 1 {
		t.Fatalf("after freeing range 1: range %d, err %v; want 1", b.IDRange, err)
	}
	if r, err := s.Get(ctx, b.ID); err != nil || r.IDRange != 1 {
		t.Fatalf("stored range %v, err %v", r, err)
	}
	// Hold every other range directly, then one more box must be refused.
	if _, err := s.db.Exec(`WITH RECURSIVE n(i) AS (SELECT 4 UNION ALL SELECT i+1 FROM n WHERE i+1 < ?)
		INSERT INTO boxes(id, owner, engine, image, status, created_at, updated_at, id_range)
		SELECT printf('fill%022d', i), 'filler', 'fake', 'default', 'stopped', 0, 0, i FROM n`, MaxIDRanges); err != nil {
		t.Fatal(err)
	}
	err := s.Insert(ctx, newBox("local", "one-too-many"))
	if !errors.Is(err, ErrNoIDRange) {
		t.Fatalf("insert with every range held: %v; want ErrNoIDRange", err)
	}
	if _, err := s.Resolve(ctx, "local", "one-too-many"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused box was stored: %v", err)
	}
}

// TestMigrateGivesExistingBoxesDistinctRanges: boxes recorded before id
// ranges existed each get their own.
func TestMigrateGivesExistingBoxesDistinctRanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := migrations()
	for _, m := range ms[:2] {
		if _, err := db.Exec(m.sql); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := db.Exec(`INSERT INTO boxes(id, owner, engine, image, status, created_at, updated_at)
			VALUES(?, 'local', 'jail', 'default', 'stopped', 1, 1)`, fmt.Sprintf("01jold000000000000000000%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA application_id=%d; PRAGMA user_version=2`, applicationID)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := openTest(t, path)
	boxes, err := s.List(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, b := range boxes {
		if b.IDRange < 0 || seen[b.IDRange] {
			t.Fatalf("migrated box %s has range %d (seen: %v)", b.ID, b.IDRange, seen)
		}
		seen[b.IDRange] = true
	}
	b := newBox("local", "new")
	if err := s.Insert(context.Background(), b); err != nil || seen[b.IDRange] {
		t.Fatalf("new box range %d err %v collides with migrated %v", b.IDRange, err, seen)
	}
}

// TestAdmissionSeesOtherBoxesInTheSameTransaction: the usage handed to
// admit counts what is recorded, live statuses only for memory, and a
// refusal stores nothing.
func TestAdmissionSeesOtherBoxesInTheSameTransaction(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	q := UsageQuery{Owner: "a", Live: []string{"running", "starting"}}
	add := func(owner, status string, mem int) *Box {
		b := &Box{Owner: owner, Engine: "fake", Image: "default", Status: status, Spec: []byte(fmt.Sprintf(`{"memory_mib":%d,"cpus":2}`, mem))}
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	add("a", "running", 512)
	add("b", "starting", 1024)
	stopped := add("a", "stopped", 4096)
	var seen Usage
	refuse := errors.New("full")
	err := s.InsertAdmitted(ctx, newBox("a", "x"), q, func(u Usage) error { seen = u; return refuse })
	if !errors.Is(err, refuse) {
		t.Fatalf("admit's error not returned: %v", err)
	}
	if seen != (Usage{Boxes: 3, OwnerBoxes: 2, Live: 2, LiveMemoryMiB: 1536, LiveCPUs: 4}) {
		t.Fatalf("usage %+v", seen)
	}
	if bs, _ := s.List(ctx, Filter{}); len(bs) != 3 {
		t.Fatalf("a refused box was stored: %d rows", len(bs))
	}
	// A restart sees every other box, not itself.
	_, err = s.UpdateAdmitted(ctx, stopped.ID, q, func(b *Box, u Usage) error {
		seen = u
		b.Status = "starting"
		return nil
	})
	if err != nil || seen.Boxes != 2 || seen.LiveMemoryMiB != 1536 {
		t.Fatalf("update usage %+v err %v", seen, err)
	}
}
