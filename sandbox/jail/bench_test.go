package jail_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
)

// benchEngine is the jail engine without a test logger (which would be
// part of the figures), its availability printed with the table.
func benchEngine(home string) *jail.Engine {
	e := jail.New(jail.Config{Home: home})
	bench.Env("engine jail", e.Available(context.Background()).Reason)
	return e
}

// benchManager is a manager on home with the jail engine, without logging.
func benchManager(b *testing.B, home string) *sandbox.Manager {
	b.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{benchEngine(home)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close(); st.Close() })
	return m
}

// BenchmarkJailStart: box start until the agent answered the hello, against
// `unshare` creating the same kinds of namespaces around /bin/true,
// interleaved. Targets: p50 under 50 ms, under 3x the baseline.
func BenchmarkJailStart(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	eng := benchEngine(home)
	bench.Compare(b, 25,
		bench.Case{Name: "baseline", Op: bench.Timed(func(b *testing.B) {
			if out, err := exec.Command("unshare", "--user", "--map-root-user", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "/bin/true").CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		})},
		bench.Case{Name: "jail", Op: func(b *testing.B) time.Duration {
			id := persist.NewID()
			spec := sandbox.Spec{ID: id, Image: "default", CPUs: 1, MemoryMiB: 256, BoxDir: filepath.Join(home, "boxes", id), Socket: filepath.Join(home, id+".sock")}
			os.MkdirAll(spec.BoxDir, 0o700)
			t := time.Now()
			h, err := eng.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t)
			eng.Destroy(context.Background(), spec, h)
			return d
		}})
}

// BenchmarkPythonPrint: python3 -c 'print(1)' through the manager in a
// running box, against the same command run directly on the host,
// interleaved. Target: under 1.3x.
func BenchmarkPythonPrint(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	m := benchManager(b, home)
	box, err := m.Create(context.Background(), "bench", sandbox.CreateRequest{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Destroy(context.Background(), "bench", box.ID)
	req := sandbox.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}}
	bench.Compare(b, 25,
		bench.Case{Name: "baseline", Op: bench.Timed(func(b *testing.B) {
			if out, err := exec.Command("/usr/bin/python3", "-c", "print(1)").Output(); err != nil || string(out) != "1\n" {
				b.Fatal(err)
			}
		})},
		bench.Case{Name: "manager", Op: bench.Timed(func(b *testing.B) {
			var out bytes.Buffer
			if _, _, err := m.Exec(context.Background(), "bench", box.ID, req, sandbox.ExecIO{Stdout: &out}); err != nil || out.String() != "1\n" {
				b.Fatal(err)
			}
		})})
}

// BenchmarkIdleBoxMemory starts idle boxes and reports the host memory they
// hold: the resident set of every process in each box (target: under 8 MiB),
// the median and the spread over the boxes.
func BenchmarkIdleBoxMemory(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	m := benchManager(b, home)
	const n = 5
	var ids []string
	for range n {
		box, err := m.Create(context.Background(), "bench", sandbox.CreateRequest{})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, box.ID)
		defer m.Destroy(context.Background(), "bench", box.ID)
	}
	time.Sleep(500 * time.Millisecond) // let the boxes settle
	var rss []float64
	for _, id := range ids {
		procs, _ := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/memory/boxlite/%s/cgroup.procs", id))
		if len(procs) == 0 {
			procs, _ = os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/boxlite/%s/cgroup.procs", id))
		}
		var kib int64
		for _, p := range strings.Fields(string(procs)) {
			kib += rssKiB(p)
		}
		rss = append(rss, float64(kib)/1024)
	}
	lo, med, hi := spread(rss)
	bench.Report(b, "idle", map[string]float64{"rss-MiB/box": med, "min-rss-MiB": lo, "max-rss-MiB": hi, "boxes": n})
}

// spread returns the minimum, median and maximum of xs (len(xs) > 0).
func spread(xs []float64) (lo, med, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func rssKiB(pid string) int64 {
	b, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
