package persist

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestFreeIDRangeIsTheLowestFree checks the gap search of Insert against
// the definition (the smallest index no row holds) on fixed layouts and on
// random ones: the dense shortcut, a gap at either end, several gaps, and
// the binary search's boundaries.
func TestFreeIDRangeIsTheLowestFree(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "")
	run := func(name string, held []int) {
		t.Helper()
		if _, err := s.db.ExecContext(ctx, `DELETE FROM boxes`); err != nil {
			t.Fatal(err)
		}
		set := map[int]bool{}
		for _, r := range held {
			set[r] = true
			if _, err := s.db.ExecContext(ctx, `INSERT INTO boxes(id, owner, engine, image, status, created_at, updated_at, id_range)
				VALUES(?, 'filler', 'fake', 'default', 'stopped', 0, 0, ?)`, NewID(), r); err != nil {
				t.Fatal(err)
			}
		}
		want := 0
		for set[want] {
			want++
		}
		b := newBox("local", "")
		if err := s.Insert(ctx, b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b.IDRange != want {
			t.Errorf("%s: held %v: got range %d; want %d", name, held, b.IDRange, want)
		}
	}
	seq := func(from, to int, skip ...int) []int {
		var r []int
	next:
		for i := from; i < to; i++ {
			for _, s := range skip {
				if i == s {
					continue next
				}
			}
			r = append(r, i)
		}
		return r
	}
	for _, c := range []struct {
		name string
		held []int
	}{
		{"empty", nil},
		{"dense", seq(0, 100)},
		{"0 free", seq(1, 100)},
		{"gap at the top", seq(0, 100, 98)},
		{"gap in the middle", seq(0, 100, 50)},
		{"several gaps", seq(0, 100, 7, 8, 60)},
		{"only high ranges", []int{1000, 1001}},
		{"power of two", seq(0, 128, 64)},
		{"two held, one between", []int{0, 2}},
	} {
		run(c.name, c.held)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		var held []int
		for range rng.IntN(64) {
			held = append(held, rng.IntN(80))
		}
		seen := map[int]bool{}
		var uniq []int
		for _, r := range held {
			if !seen[r] {
				seen[r] = true
				uniq = append(uniq, r)
			}
		}
		run(fmt.Sprintf("random %d", i), uniq)
	}
}
