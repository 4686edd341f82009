package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

const sample = `boxlite-bench-env: engine qemu: QEMU microvm on TCG (no usable KVM)
goos: linux
goarch: amd64
pkg: github.com/boxlite-ai/boxlite-mcp/sandbox/qemu
cpu: Test CPU @ 1.00GHz
BenchmarkVMStart/baseline-2         	       1	2310000000 ns/op	2600000000 max-ns/op	2200000000 min-ns/op	         5.000 rounds
BenchmarkVMStart/engine-2           	       1	2450000000 ns/op	         3.250 load-1m	2700000000 max-ns/op	2300000000 min-ns/op	         1.120 ratio-max	         0.9800 ratio-min	         1.060 ratio-p50	         5.000 rounds
boxlite-bench-env: engine qemu: QEMU microvm on TCG (no usable KVM)
BenchmarkVMPython/memory-2          	       1	        300.0 qemu-rss-MiB
BenchmarkOld/baseline-2             	  100000	     10000 ns/op	     512 B/op
BenchmarkOld/store-2                	   50000	     25000 ns/op	     900 B/op
BenchmarkStream/baseline-2          	       1	  50000000 ns/op	 2097 MB/s	  60000000 max-ns/op	  40000000 min-ns/op	         9.000 rounds
BenchmarkStream/agent-2             	       1	 100000000 ns/op	 1049 MB/s	 120000000 max-ns/op	  80000000 min-ns/op	         2.100 ratio-max	         1.900 ratio-min	         2.000 ratio-p50	         9.000 rounds
PASS
`

func TestParse(t *testing.T) {
	rep := parse(strings.NewReader(sample))
	if rep.cpu != "Test CPU @ 1.00GHz" || rep.goos != "linux" || rep.goarch != "amd64" {
		t.Fatalf("header %+v", rep)
	}
	if len(rep.env) != 1 || rep.env[0] != "engine qemu: QEMU microvm on TCG (no usable KVM)" {
		t.Fatalf("env lines %q (want one, deduplicated)", rep.env)
	}
	if len(rep.results) != 7 {
		t.Fatalf("%d results", len(rep.results))
	}
	e := rep.results[1]
	if e.name != "VMStart/engine" || e.procs != "2" || e.nsPerOp != 2.45e9 || e.metrics["ratio-p50"] != 1.06 || e.metrics["rounds"] != 5 {
		t.Fatalf("engine line %+v", e)
	}
}

func TestRender(t *testing.T) {
	var b bytes.Buffer
	render(&b, parse(strings.NewReader(sample)), machine{cores: "2", kernel: "linux 6.18", memory: "24.0 GiB", goVersion: "go1.26"},
		"make bench", "abc123", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	out := b.String()
	for _, want := range []string{
		"Produced by `make bench` on 2026-11-30 12:00 UTC at commit abc123.",
		"| CPU | Test CPU @ 1.00GHz, 2 cores (GOMAXPROCS 2) |",
		"| kernel | linux 6.18 |",
		"| engine qemu | QEMU microvm on TCG (no usable KVM) |",
		// The harness's figures: median, spread, rounds, paired ratios.
		"| VMStart/baseline | 5 | 2.31 s | 2.2 s – 2.6 s | baseline |  |  |",
		"| VMStart/engine | 5 | 2.45 s | 2.3 s – 2.7 s | 1.06× (0.98 – 1.12) | 3.2 |  |",
		// Figures without a timing, and old-style lines (ratio of ns/op).
		"| VMPython/memory |  |  |  |  |  | 300 qemu-rss-MiB |",
		"| Old/store |  | 25 µs |  | 2.50× |  |  |",
		"| Stream/baseline | 9 | 50 ms | 40 ms – 60 ms | baseline |  | 2097 MB/s |",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// Rows keep the order they ran in: each baseline before its subjects.
	if i, j := strings.Index(out, "| Stream/baseline"), strings.Index(out, "| Stream/agent"); i < 0 || j < i {
		t.Errorf("Stream/baseline not before Stream/agent:\n%s", out)
	}
}

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		ns   float64
		want string
	}{
		{512, "512 ns"},
		{1500, "1.5 µs"},
		{360000, "360 µs"},
		{1234567, "1.23 ms"},
		{2.31e9, "2.31 s"},
	} {
		if got := duration(tt.ns); got != tt.want {
			t.Errorf("duration(%v) = %q, want %q", tt.ns, got, tt.want)
		}
	}
}

func TestReplaceBetween(t *testing.T) {
	doc := "# Benchmarks\n\nprose\n\n" + beginMark + "\nold table\n" + endMark + "\n\nmore prose\n"
	got, err := replaceBetween(doc, "new table\n")
	if err != nil || got != "# Benchmarks\n\nprose\n\n"+beginMark+"\nnew table\n\n"+endMark+"\n\nmore prose\n" {
		t.Fatalf("%q, %v", got, err)
	}
	if _, err := replaceBetween("no markers", "x"); err == nil {
		t.Fatal("a document without markers was accepted")
	}
}
