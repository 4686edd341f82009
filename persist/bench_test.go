package persist

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
)

// benchStore returns a store holding n boxes, written in one transaction
// with the id ranges Insert would have given them (0..n-1), in one
// transaction rather than n.
func benchStore(b *testing.B, n int) (*Store, []string) {
	b.Helper()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	ids := make([]string, n)
	now := time.Now()
	for i := range n {
		box := newBox(fmt.Sprintf("owner%d", i%10), fmt.Sprintf("box-%d", i))
		box.ID = NewID()
		box.CreatedAt, box.UpdatedAt, box.LastUsedAt, box.Spec = now, now, now, []byte("{}")
		vals := append(box.values(), i)
		q := `INSERT INTO boxes(` + insertColumns + `, id_range) VALUES(` + strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",") + `)`
		if _, err := tx.ExecContext(ctx, q, vals...); err != nil {
			b.Fatal(err)
		}
		ids[i] = box.ID
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return s, ids
}

// BenchmarkStore measures the store at 10k boxes. Each operation is paired
// with a baseline: the same SQL through database/sql directly, interleaved
// with it in rounds of batches, so the ratio is our layer's cost
// (transactions, row checks, scanning, lookup rules).
func BenchmarkStore(b *testing.B) {
	ctx := context.Background()
	s, ids := benchStore(b, 10_000)
	i := 0
	pick := func() string { i++; return ids[(i*7919)%len(ids)] }
	owners := map[string]string{}
	for _, id := range ids {
		r, _ := s.Get(ctx, id)
		owners[id] = r.Owner
	}
	const rounds, batch = 15, 100
	compare := func(name string, baseline, store func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			bench.Compare(b, rounds,
				bench.Case{Name: "baseline", Op: bench.Batch(batch, baseline)},
				bench.Case{Name: "store", Op: bench.Batch(batch, store)})
		})
	}
	compare("insert", func(b *testing.B) {
		box := newBox("bench", "")
		box.ID = NewID()
		box.CreatedAt, box.UpdatedAt, box.LastUsedAt, box.Spec = time.Now(), time.Now(), time.Now(), []byte("{}")
		vals := box.values()
		q := `INSERT INTO boxes(` + insertColumns + `) VALUES(` + strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",") + `)`
		if _, err := s.db.ExecContext(ctx, q, vals...); err != nil {
			b.Fatal(err)
		}
	}, func(b *testing.B) {
		if err := s.Insert(ctx, newBox("bench", "")); err != nil {
			b.Fatal(err)
		}
	})
	// A box near the top of the ranges is destroyed and a new one takes its
	// range: the gap search's worst case (Insert above is its best: the
	// ranges are dense). The baseline is the same delete and a raw insert
	// naming the range.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM boxes WHERE id_range IS NULL`); err != nil { // the raw inserts above
		b.Fatal(err)
	}
	victim, gapRange := ids[len(ids)-3], len(ids)-3
	compare("insert-into-gap", func(b *testing.B) {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM boxes WHERE id = ?`, victim); err != nil {
			b.Fatal(err)
		}
		box := newBox("bench", "")
		box.ID = NewID()
		box.CreatedAt, box.UpdatedAt, box.LastUsedAt, box.Spec = time.Now(), time.Now(), time.Now(), []byte("{}")
		vals := append(box.values(), gapRange)
		q := `INSERT INTO boxes(` + insertColumns + `, id_range) VALUES(` + strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",") + `)`
		if _, err := s.db.ExecContext(ctx, q, vals...); err != nil {
			b.Fatal(err)
		}
		victim = box.ID
	}, func(b *testing.B) {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM boxes WHERE id = ?`, victim); err != nil {
			b.Fatal(err)
		}
		box := newBox("bench", "")
		if err := s.Insert(ctx, box); err != nil || box.IDRange != gapRange {
			b.Fatalf("insert into the gap: range %d, %v; want %d", box.IDRange, err, gapRange)
		}
		victim = box.ID
	})
	compare("get", func(b *testing.B) {
		var id string
		if err := s.db.QueryRowContext(ctx, `SELECT id FROM boxes WHERE id = ?`, pick()).Scan(&id); err != nil {
			b.Fatal(err)
		}
	}, func(b *testing.B) {
		if _, err := s.Get(ctx, pick()); err != nil {
			b.Fatal(err)
		}
	})
	compare("resolve-prefix", func(b *testing.B) {
		var got string
		if err := s.db.QueryRowContext(ctx, `SELECT id FROM boxes WHERE id = ?`, pick()).Scan(&got); err != nil {
			b.Fatal(err)
		}
	}, func(b *testing.B) {
		id := pick()
		// A 20-character prefix: unique, and it misses the id and name lookups first.
		if _, err := s.Resolve(ctx, owners[id], id[:20]); err != nil {
			b.Fatal(err)
		}
	})
	compare("update", func(b *testing.B) {
		if _, err := s.db.ExecContext(ctx, `UPDATE boxes SET status = ?, updated_at = ? WHERE id = ?`, "running", time.Now().UnixMilli(), pick()); err != nil {
			b.Fatal(err)
		}
	}, func(b *testing.B) {
		if _, err := s.Update(ctx, pick(), func(b *Box) error { b.Status = "running"; return nil }); err != nil {
			b.Fatal(err)
		}
	})
}
