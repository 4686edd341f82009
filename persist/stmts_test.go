package persist

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// TestCachedLookups: the box lookups run through cached prepared
// statements, from many goroutines at once, and still see what another
// process's store (here: a second Store on the same file) wrote or
// deleted since they were prepared.
func TestCachedLookups(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "boxlite.db")
	s, other := openTest(t, path), openTest(t, path)
	b := newBox("alice", "web")
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				for _, ref := range []string{b.ID, "web", b.ID[:MinPrefix+2]} {
					r, err := s.Resolve(ctx, "alice", ref)
					if err != nil || r.ID != b.ID {
						errs <- errors.Join(err, errors.New("resolve "+ref+" gave another box"))
						return
					}
				}
				if _, err := s.Get(ctx, b.ID); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.stmts.mu.Lock()
	cached := len(s.stmts.m)
	s.stmts.mu.Unlock()
	if cached != 3 { // by id and owner, by name, by id (the prefix scan is not cached)
		t.Fatalf("%d cached statements after 800 lookups, want 3", cached)
	}

	// The other store renames the box, then deletes it: the cached
	// statements see both.
	if _, err := other.db.ExecContext(ctx, `UPDATE boxes SET name = 'api' WHERE id = ?`, b.ID); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Resolve(ctx, "alice", "api"); err != nil || r.ID != b.ID {
		t.Fatalf("after rename: %v %v", r, err)
	}
	if _, err := s.Resolve(ctx, "alice", "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name after rename: %v", err)
	}
	if err := other.Delete(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := s.Resolve(ctx, "alice", b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resolve after delete: %v", err)
	}
}
