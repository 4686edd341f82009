// Package bench is the benchmark harness behind `make bench`: figures
// worth publishing from a shared, noisy machine.
//
// A comparison runs in rounds: a round runs every case once, and the order
// rotates from round to round (baseline first, then the subject first, ...),
// so load that comes and goes hits the baseline and the subject alike. An
// untimed warm-up round comes first. Each case is then reported as a
// sub-benchmark whose ns/op is the median of its rounds, with the minimum,
// the maximum and the number of rounds; a subject also gets the median,
// minimum and maximum of its per-round ratios to the baseline (paired: both
// ran in the same round), and every row the host's load average when it
// was measured. Run with -benchtime=1x: the rounds are the
// harness's, not the testing package's. internal/cmd/benchratio turns the
// output into the table of BENCHMARKS.md.
package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Case is one side of a comparison.
type Case struct {
	Name string
	// Op runs one measured operation and returns how long it took; setup and
	// teardown around the measured part stay out of the figure.
	Op func(b *testing.B) time.Duration
	// Bytes, when set, is what one Op moves: the report adds MB/s.
	Bytes int64
}

// Timed is an Op timing all of f.
func Timed(f func(b *testing.B)) func(*testing.B) time.Duration {
	return func(b *testing.B) time.Duration {
		t := time.Now()
		f(b)
		return time.Since(t)
	}
}

// Batch is an Op timing n calls of f and returning the time of one, for
// operations too short to time alone.
func Batch(n int, f func(b *testing.B)) func(*testing.B) time.Duration {
	return func(b *testing.B) time.Duration {
		t := time.Now()
		for range n {
			f(b)
		}
		return time.Since(t) / time.Duration(n)
	}
}

// Compare measures cases[0] (the baseline: name it "baseline") and the
// other cases in rounds interleaved rounds after a warm-up round, and
// reports one sub-benchmark per case.
func Compare(b *testing.B, rounds int, cases ...Case) {
	b.Helper()
	samples := measure(b, rounds, cases)
	sums := summaries(samples)
	load, haveLoad := loadAverage()
	for i, c := range cases {
		s := sums[i]
		b.Run(c.Name, func(b *testing.B) {
			b.ReportMetric(s.median, "ns/op")
			b.ReportMetric(s.min, "min-ns/op")
			b.ReportMetric(s.max, "max-ns/op")
			b.ReportMetric(float64(s.rounds), "rounds")
			if c.Bytes > 0 && s.median > 0 {
				b.ReportMetric(float64(c.Bytes)/(s.median/1e9)/1e6, "MB/s")
			}
			if haveLoad {
				b.ReportMetric(load, "load-1m")
			}
			if i > 0 {
				b.ReportMetric(s.ratioMedian, "ratio-p50")
				b.ReportMetric(s.ratioMin, "ratio-min")
				b.ReportMetric(s.ratioMax, "ratio-max")
			}
		})
	}
}

// loadAverage is the host's 1-minute load average (Linux), reported with
// each figure: on a shared machine it says how noisy the figure is.
func loadAverage() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return v, err == nil
}

// measure runs the warm-up round and the timed rounds; samples[c][r] is case
// c's time in round r.
func measure(b *testing.B, rounds int, cases []Case) [][]time.Duration {
	samples := make([][]time.Duration, len(cases))
	for r := -1; r < rounds; r++ { // round -1 warms up
		for _, c := range roundOrder(r, len(cases)) {
			d := cases[c].Op(b)
			if r >= 0 {
				samples[c] = append(samples[c], d)
			}
		}
	}
	return samples
}

// roundOrder is the order of n cases in round r: rotated by r, so that with
// two cases the baseline and the subject take turns going first.
func roundOrder(r, n int) []int {
	if r < 0 {
		r = 0
	}
	out := make([]int, n)
	for i := range n {
		out[i] = (r + i) % n
	}
	return out
}

type summary struct {
	rounds                          int
	median, min, max                float64 // ns
	ratioMedian, ratioMin, ratioMax float64 // to the baseline, per round
}

// summaries of every case's samples; cases after the first also get their
// per-round ratios to the first.
func summaries(samples [][]time.Duration) []summary {
	out := make([]summary, len(samples))
	for i, ds := range samples {
		ns := make([]float64, len(ds))
		var ratios []float64
		for r, d := range ds {
			ns[r] = float64(d)
			if i > 0 && r < len(samples[0]) && samples[0][r] > 0 {
				ratios = append(ratios, float64(d)/float64(samples[0][r]))
			}
		}
		out[i].rounds = len(ds)
		out[i].median, out[i].min, out[i].max = medianMinMax(ns)
		out[i].ratioMedian, out[i].ratioMin, out[i].ratioMax = medianMinMax(ratios)
	}
	return out
}

// medianMinMax of xs (the median of an even count is the mean of the middle two).
func medianMinMax(xs []float64) (median, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	median = s[n/2]
	if n%2 == 0 {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}

// Report reports figures that are not timings (memory, say) as a
// sub-benchmark of their own, without an ns/op.
func Report(b *testing.B, name string, metrics map[string]float64) {
	b.Helper()
	b.Run(name, func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		for unit, v := range metrics {
			b.ReportMetric(v, unit)
		}
	})
}

// EnvPrefix starts the lines Env prints; benchratio collects them.
const EnvPrefix = "boxlite-bench-env: "

var envSeen sync.Map

// Env prints a fact about the machine the figures depend on (an engine and
// its acceleration, say) once per test binary, for benchratio's header.
func Env(key, value string) {
	if _, dup := envSeen.LoadOrStore(key, true); !dup {
		fmt.Printf("%s%s: %s\n", EnvPrefix, key, value)
	}
}
