// Command benchratio reads `go test -bench` output on stdin and prints the
// benchmark table of BENCHMARKS.md (Markdown): the machine it ran on, then
// every benchmark with its median, min–max spread, rounds and the load
// average while it ran, and each subject next to the baseline measured in
// the same run. A benchmark
// X/.../baseline pairs with its siblings X/.../<other>; when the harness
// (internal/bench.Compare) reported per-round ratios, the ratio column is
// their median and spread, otherwise the ratio of the ns/op figures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
)

// result is one benchmark line.
type result struct {
	name    string
	procs   string // the -N suffix: GOMAXPROCS
	nsPerOp float64
	metrics map[string]float64 // every "value unit" pair after ns/op
	order   []string           // units in the order they came
}

// report is what the output of one run holds.
type report struct {
	results []result
	cpu     string
	env     []string // the boxlite-bench-env lines, in order, without the prefix
	goos    string
	goarch  string
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?\s+\d+\s+(.*)$`)

func parse(r io.Reader) report {
	var rep report
	seenEnv := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		text := sc.Text()
		switch {
		case strings.HasPrefix(text, bench.EnvPrefix):
			if e := strings.TrimPrefix(text, bench.EnvPrefix); !seenEnv[e] {
				seenEnv[e] = true
				rep.env = append(rep.env, e)
			}
			continue
		case strings.HasPrefix(text, "cpu: "):
			rep.cpu = strings.TrimSpace(strings.TrimPrefix(text, "cpu: "))
			continue
		case strings.HasPrefix(text, "goos: "):
			rep.goos = strings.TrimPrefix(text, "goos: ")
			continue
		case strings.HasPrefix(text, "goarch: "):
			rep.goarch = strings.TrimPrefix(text, "goarch: ")
			continue
		}
		m := benchLine.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		res := result{name: strings.TrimPrefix(m[1], "Benchmark"), procs: m[2], metrics: map[string]float64{}}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			if f[i+1] == "ns/op" {
				res.nsPerOp = v
				continue
			}
			res.metrics[f[i+1]] = v
			res.order = append(res.order, f[i+1])
		}
		rep.results = append(rep.results, res)
	}
	return rep
}

// machine holds facts read where the table is printed (the same machine,
// right after the run).
type machine struct {
	cores, kernel, memory, goVersion string
}

func readMachine() machine {
	m := machine{cores: strconv.Itoa(runtime.NumCPU()), goVersion: runtime.Version(), kernel: "unknown", memory: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = runtime.GOOS + " " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseFloat(f[1], 64)
				m.memory = fmt.Sprintf("%.1f GiB", kib/(1<<20))
			}
		}
	}
	return m
}

func main() {
	command := flag.String("command", "make bench", "the command that produced the input, for the header")
	commit := flag.String("commit", "", "the commit the figures are of, for the header")
	update := flag.String("update", "", "also write the table into this file, between its "+beginMark+" and "+endMark+" lines")
	flag.Parse()
	var out strings.Builder
	render(&out, parse(os.Stdin), readMachine(), *command, *commit, time.Now().UTC())
	fmt.Print(out.String())
	if *update != "" {
		if err := updateFile(*update, out.String()); err != nil {
			fmt.Fprintln(os.Stderr, "benchratio:", err)
			os.Exit(1)
		}
	}
}

// The lines between which -update writes the table.
const (
	beginMark = "<!-- benchratio:begin -->"
	endMark   = "<!-- benchratio:end -->"
)

// updateFile replaces what lies between the marker lines of path with table.
func updateFile(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s, err := replaceBetween(string(b), table)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func replaceBetween(doc, table string) (string, error) {
	i := strings.Index(doc, beginMark+"\n")
	j := strings.Index(doc, "\n"+endMark)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %s ... %s lines", beginMark, endMark)
	}
	return doc[:i+len(beginMark)+1] + table + doc[j:], nil
}

func render(w io.Writer, rep report, m machine, command, commit string, now time.Time) {
	fmt.Fprintf(w, "Produced by `%s` on %s", command, now.Format("2006-01-02 15:04 MST"))
	if commit != "" {
		fmt.Fprintf(w, " at commit %s", commit)
	}
	fmt.Fprint(w, ".\n\n")
	procs := ""
	if len(rep.results) > 0 && rep.results[0].procs != "" {
		procs = fmt.Sprintf(" (GOMAXPROCS %s)", rep.results[0].procs)
	}
	cpu := rep.cpu
	if cpu == "" {
		cpu = "unknown"
	}
	fmt.Fprintf(w, "| machine | |\n| --- | --- |\n")
	fmt.Fprintf(w, "| CPU | %s, %s cores%s |\n", cpu, m.cores, procs)
	fmt.Fprintf(w, "| memory | %s |\n| kernel | %s |\n| Go | %s %s/%s |\n", m.memory, m.kernel, m.goVersion, rep.goos, rep.goarch)
	for _, e := range rep.env {
		k, v, _ := strings.Cut(e, ": ")
		fmt.Fprintf(w, "| %s | %s |\n", k, v)
	}
	fmt.Fprintln(w)

	base := map[string]result{}
	for _, r := range rep.results {
		if dir, leaf := split(r.name); leaf == "baseline" {
			base[dir] = r
		}
	}
	// In the order they ran: by package, each baseline before its subjects.
	results := rep.results
	fmt.Fprintln(w, "| benchmark | rounds | median | min – max | vs baseline: median (min – max) | load | other |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, r := range results {
		rounds, spread, median := "", "", ""
		if n, ok := r.metrics["rounds"]; ok {
			rounds = strconv.Itoa(int(n))
		}
		if r.nsPerOp > 0 {
			median = duration(r.nsPerOp)
		}
		lo, okLo := r.metrics["min-ns/op"]
		hi, okHi := r.metrics["max-ns/op"]
		if okLo && okHi {
			spread = duration(lo) + " – " + duration(hi)
		}
		load := ""
		if l, ok := r.metrics["load-1m"]; ok {
			load = strconv.FormatFloat(l, 'f', 1, 64)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.name, rounds, median, spread, ratio(r, base), load, others(r))
	}
}

// ratio is the "vs baseline" cell of r.
func ratio(r result, base map[string]result) string {
	dir, leaf := split(r.name)
	if leaf == "baseline" {
		return "baseline"
	}
	if p, ok := r.metrics["ratio-p50"]; ok {
		return fmt.Sprintf("%.2f× (%.2f – %.2f)", p, r.metrics["ratio-min"], r.metrics["ratio-max"])
	}
	if b, ok := base[dir]; ok && b.nsPerOp > 0 && r.nsPerOp > 0 {
		return fmt.Sprintf("%.2f×", r.nsPerOp/b.nsPerOp)
	}
	return ""
}

// others lists the metrics the other columns do not show.
func others(r result) string {
	var out []string
	for _, unit := range r.order {
		switch unit {
		case "rounds", "min-ns/op", "max-ns/op", "ratio-p50", "ratio-min", "ratio-max", "load-1m", "B/op", "allocs/op":
			continue
		}
		out = append(out, strconv.FormatFloat(r.metrics[unit], 'g', 4, 64)+" "+unit)
	}
	return strings.Join(out, ", ")
}

// duration formats ns with three significant digits in a fitting unit.
func duration(ns float64) string {
	for _, u := range []struct {
		div  float64
		name string
	}{{1e9, "s"}, {1e6, "ms"}, {1e3, "µs"}} {
		if ns >= u.div {
			return strconv.FormatFloat(ns/u.div, 'g', 3, 64) + " " + u.name
		}
	}
	return strconv.FormatFloat(ns, 'g', 3, 64) + " ns"
}

func split(name string) (dir, leaf string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}
