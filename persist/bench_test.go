package persist

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// benchStore returns a store holding n boxes.
func benchStore(b *testing.B, n int) (*Store, []string) {
	b.Helper()
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ids := make([]string, n)
	for i := range n {
		box := newBox(fmt.Sprintf("owner%d", i%10), fmt.Sprintf("box-%d", i))
		if err := s.Insert(context.Background(), box); err != nil {
			b.Fatal(err)
		}
		ids[i] = box.ID
	}
	return s, ids
}

// BenchmarkStore measures the store at 10k boxes. Each operation is paired
// with a baseline: the same SQL through database/sql directly, measured in
// the same run, so the ratio is our layer's cost (transactions, row checks,
// scanning, lookup rules).
func BenchmarkStore(b *testing.B) {
	ctx := context.Background()
	s, ids := benchStore(b, 10_000)
	pick := func(i int) string { return ids[(i*7919)%len(ids)] }
	owners := map[string]string{}
	for _, id := range ids {
		r, _ := s.Get(ctx, id)
		owners[id] = r.Owner
	}

	b.Run("insert/baseline", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			box := newBox("bench", "")
			box.ID = NewID()
			box.CreatedAt, box.UpdatedAt, box.LastUsedAt, box.Spec = time.Now(), time.Now(), time.Now(), []byte("{}")
			if _, err := s.db.ExecContext(ctx, `INSERT INTO boxes(`+boxColumns+`) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, box.values()...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("insert/store", func(b *testing.B) {
		for b.Loop() {
			if err := s.Insert(ctx, newBox("bench", "")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get/baseline", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			var id string
			if err := s.db.QueryRowContext(ctx, `SELECT id FROM boxes WHERE id = ?`, pick(i)).Scan(&id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get/store", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Get(ctx, pick(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("resolve-prefix/baseline", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			id := pick(i)
			var got string
			if err := s.db.QueryRowContext(ctx, `SELECT id FROM boxes WHERE id = ?`, id).Scan(&got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("resolve-prefix/store", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			id := pick(i)
			// A 20-character prefix: unique, and it misses the id and name lookups first.
			if _, err := s.Resolve(ctx, owners[id], id[:20]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("update/baseline", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := s.db.ExecContext(ctx, `UPDATE boxes SET status = ?, updated_at = ? WHERE id = ?`, "running", time.Now().UnixMilli(), pick(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("update/store", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Update(ctx, pick(i), func(b *Box) error { b.Status = "running"; return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}
