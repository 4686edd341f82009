package network

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testagent"
)

// BenchmarkNetworkHelperStart: a box's network set-up on the host side,
// from spawning its helper to the helper serving (stack, DNS, control and
// link sockets up), against spawning the same binary to exit at once,
// interleaved. The jail engine adds creating its tap device
// (BenchmarkJailStartNetwork measures a whole box start).
func BenchmarkNetworkHelperStart(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bln")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	p, _ := ParsePolicy(true, []string{"pypi.org", "*.pythonhosted.org"})
	bench.Compare(b, 25,
		bench.Case{Name: "baseline", Op: bench.Timed(func(b *testing.B) {
			exec.Command(exe, "-test.run=^$").Run()
		})},
		bench.Case{Name: "helper", Op: func(b *testing.B) time.Duration {
			l := Launch{Host: Host{Exe: exe, Resolvers: []string{"127.0.0.1:9"}}, BoxID: "bench", Policy: p,
				Control: filepath.Join(dir, "c"), Listen: filepath.Join(dir, "l"), Log: filepath.Join(dir, "log"),
				Stage: testagent.Path(b), UID: testHelperUID}
			t := time.Now()
			id, err := Start(context.Background(), l)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t)
			Stop(&id)
			Release(l.BoxID)
			return d
		}})
}
