package jail_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// BenchmarkJailStartNetwork: a box start with an allow list (tap device in
// the box's namespace, network helper, resolver) against the same start
// without network, interleaved: the difference is the network's set-up.
func BenchmarkJailStartNetwork(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	eng := jail.New(jail.Config{Home: home, Net: network.Host{Resolvers: []string{"127.0.0.1:9"}}})
	start := func(net bool) func(b *testing.B) time.Duration {
		return func(b *testing.B) time.Duration {
			id := persist.NewID()
			spec := sandbox.Spec{ID: id, Image: "default", CPUs: 1, MemoryMiB: 256, BoxDir: filepath.Join(home, "boxes", id), Socket: filepath.Join(home, id+".sock")}
			if net {
				spec.Network, spec.NetworkAllow = true, []string{"pypi.org"}
			}
			os.MkdirAll(spec.BoxDir, 0o700)
			t := time.Now()
			h, err := eng.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t)
			eng.Destroy(context.Background(), spec, h)
			return d
		}
	}
	bench.Compare(b, 15, bench.Case{Name: "baseline", Op: start(false)}, bench.Case{Name: "network", Op: start(true)})
}
