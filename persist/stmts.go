package persist

import (
	"context"
	"database/sql"
	"sync"
)

// stmts caches the prepared statements of the hot lookups (a box by id,
// by name, by reference), which run several times per tool call: the
// driver compiles every statement it is given anew, and compiling was
// most of a lookup's cost. database/sql prepares a cached statement again
// on each pooled connection that runs it.
type stmts struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// queryRow runs query through its cached prepared statement.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return s.db.QueryRowContext(ctx, query, args...) // the error shows there again
	}
	return st.QueryRowContext(ctx, args...)
}

func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	if st := s.stmts.m[query]; st != nil {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.stmts.m == nil {
		s.stmts.m = map[string]*sql.Stmt{}
	}
	s.stmts.m[query] = st
	return st, nil
}

// closeStmts closes the cached statements (Close).
func (s *Store) closeStmts() {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	for _, st := range s.stmts.m {
		st.Close()
	}
	s.stmts.m = nil
}
