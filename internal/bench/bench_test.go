package bench

import (
	"slices"
	"testing"
	"time"
)

// TestMeasureInterleaves: after one warm-up round, the cases take turns
// going first, every round runs every case once, and each sample lands with
// its case.
func TestMeasureInterleaves(t *testing.T) {
	var order []string
	op := func(name string, d time.Duration) func(*testing.B) time.Duration {
		return func(*testing.B) time.Duration { order = append(order, name); return d }
	}
	samples := measure(nil, 3, []Case{
		{Name: "baseline", Op: op("b", time.Millisecond)},
		{Name: "subject", Op: op("s", 2*time.Millisecond)},
	})
	if want := []string{"b", "s", "b", "s", "s", "b", "b", "s"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v (warm-up, then alternating)", order, want)
	}
	if len(samples[0]) != 3 || len(samples[1]) != 3 || samples[0][1] != time.Millisecond || samples[1][2] != 2*time.Millisecond {
		t.Fatalf("samples %v", samples)
	}
}

func TestRoundOrderRotates(t *testing.T) {
	for _, tt := range []struct {
		r, n int
		want []int
	}{
		{-1, 2, []int{0, 1}},
		{0, 2, []int{0, 1}},
		{1, 2, []int{1, 0}},
		{2, 3, []int{2, 0, 1}},
		{4, 1, []int{0}},
	} {
		if got := roundOrder(tt.r, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("roundOrder(%d, %d) = %v, want %v", tt.r, tt.n, got, tt.want)
		}
	}
}

func TestSummaries(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		var out []time.Duration
		for _, x := range xs {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	// Round 3 was slow for both (load on the machine): the paired ratio
	// stays at 2 while the subject's own spread is wide.
	got := summaries([][]time.Duration{ms(10, 11, 30, 12), ms(20, 22, 60, 24)})
	b, s := got[0], got[1]
	if b.rounds != 4 || b.median != 11.5e6 || b.min != 10e6 || b.max != 30e6 {
		t.Errorf("baseline %+v", b)
	}
	if s.median != 23e6 || s.min != 20e6 || s.max != 60e6 {
		t.Errorf("subject %+v", s)
	}
	if s.ratioMedian != 2 || s.ratioMin != 2 || s.ratioMax != 2 {
		t.Errorf("paired ratios %+v, want 2 throughout", s)
	}
	if b.ratioMedian != 0 {
		t.Errorf("the baseline has no ratio: %+v", b)
	}
}

func TestMedianMinMax(t *testing.T) {
	for _, tt := range []struct {
		xs               []float64
		median, min, max float64
	}{
		{nil, 0, 0, 0},
		{[]float64{5}, 5, 5, 5},
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		m, lo, hi := medianMinMax(tt.xs)
		if m != tt.median || lo != tt.min || hi != tt.max {
			t.Errorf("medianMinMax(%v) = %v %v %v", tt.xs, m, lo, hi)
		}
	}
}
