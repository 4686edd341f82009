// Command benchratio reads `go test -bench` output on stdin and prints every
// benchmark next to the baseline measured in the same run: a benchmark
// X/.../baseline pairs with its siblings X/.../<other>, and the report shows
// other's ns/op divided by the baseline's. Custom metrics are passed through.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

type result struct {
	name    string
	nsPerOp float64
	metrics []string
}

var line = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(.*)$`)

func main() {
	var results []result
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		var extra []string
		fields := strings.Fields(m[3])
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i+1] != "B/op" && fields[i+1] != "allocs/op" && fields[i+1] != "MB/s" {
				extra = append(extra, fields[i]+" "+fields[i+1])
			} else if fields[i+1] == "MB/s" {
				extra = append(extra, fields[i]+" MB/s")
			}
		}
		results = append(results, result{m[1], ns, extra})
	}
	base := map[string]float64{}
	for _, r := range results {
		if dir, leaf := split(r.name); leaf == "baseline" {
			base[dir] = r.nsPerOp
		}
	}
	sort.SliceStable(results, func(i, j int) bool { return results[i].name < results[j].name })
	fmt.Printf("%-60s %14s %10s  %s\n", "benchmark", "ns/op", "vs base", "metrics")
	for _, r := range results {
		ratio := ""
		if dir, leaf := split(r.name); leaf != "baseline" {
			if b, ok := base[dir]; ok && b > 0 {
				ratio = fmt.Sprintf("%.2fx", r.nsPerOp/b)
			}
		} else {
			ratio = "1.00x"
		}
		fmt.Printf("%-60s %14.0f %10s  %s\n", r.name, r.nsPerOp, ratio, strings.Join(r.metrics, ", "))
	}
}

func split(name string) (dir, leaf string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}
