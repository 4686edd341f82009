package jail_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// BenchmarkJailStart: box start until the agent answered the hello, against
// `unshare` creating the same kinds of namespaces around /bin/true, measured
// in the same run. Targets: p50 under 50 ms, under 3x the baseline.
func BenchmarkJailStart(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	b.Run("baseline", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			t := time.Now()
			if out, err := exec.Command("unshare", "--user", "--map-root-user", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "/bin/true").CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			ds = append(ds, time.Since(t))
		}
		testenv.ReportP50(b, ds)
	})
	b.Run("jail", func(b *testing.B) {
		eng := newEngine(b, home)
		var ds []time.Duration
		for b.Loop() {
			id := persist.NewID()
			spec := sandbox.Spec{ID: id, Image: "default", CPUs: 1, MemoryMiB: 256, BoxDir: filepath.Join(home, "boxes", id), Socket: filepath.Join(home, id+".sock")}
			os.MkdirAll(spec.BoxDir, 0o700)
			t := time.Now()
			h, err := eng.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t))
			b.StopTimer()
			eng.Destroy(context.Background(), spec, h)
			b.StartTimer()
		}
		testenv.ReportP50(b, ds)
	})
}

// BenchmarkPythonPrint: python3 -c 'print(1)' through the manager in a
// running box, against the same command run directly on the host in the
// same run. Target: under 1.3x.
func BenchmarkPythonPrint(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	b.Run("baseline", func(b *testing.B) {
		for b.Loop() {
			if out, err := exec.Command("/usr/bin/python3", "-c", "print(1)").Output(); err != nil || string(out) != "1\n" {
				b.Fatal(err)
			}
		}
	})
	b.Run("manager", func(b *testing.B) {
		m := server(b, home)
		box, err := m.Create(context.Background(), "bench", sandbox.CreateRequest{})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Destroy(context.Background(), "bench", box.ID)
		req := wire.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}}
		for b.Loop() {
			var out bytes.Buffer
			if _, _, err := m.Exec(context.Background(), "bench", box.ID, req, client.ExecIO{Stdout: &out}); err != nil || out.String() != "1\n" {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIdleBoxMemory starts idle boxes and reports the host memory they
// hold: resident set of every process in the box (target: under 8 MiB).
func BenchmarkIdleBoxMemory(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	m := server(b, home)
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
	time.Sleep(500 * time.Millisecond)
	var total int64
	for b.Loop() {
		total = 0
		for _, id := range ids {
			procs, _ := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/memory/boxlite/%s/cgroup.procs", id))
			if len(procs) == 0 {
				procs, _ = os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/boxlite/%s/cgroup.procs", id))
			}
			for _, p := range strings.Fields(string(procs)) {
				total += rssKiB(p)
			}
		}
	}
	b.ReportMetric(float64(total)/n/1024, "rss-MiB/box")
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
