package sandbox_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

// BenchmarkPoolCreate: create_box of the default shape until the first
// print(1) in the default Python session has answered (what an agent
// waits for), per engine: a box started cold (the baseline) against one
// claimed from a warm pool of one box, refilled between rounds (the wait
// for the refill is not timed). Targets: pooled jail under 20 ms, pooled
// qemu (TCG) under 0.5 s.
func BenchmarkPoolCreate(b *testing.B) {
	testenv.RequireRoot(b)
	engines := []struct {
		name   string
		rounds int
		make   func(home string) sandbox.Engine
	}{
		{"jail", 10, func(home string) sandbox.Engine { return jail.New(jail.Config{Home: home}) }},
		{"qemu", 3, func(home string) sandbox.Engine { return qemu.New(qemu.Config{Home: home, DieWithParent: true}) }},
	}
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			coldHome, poolHome := testenv.Home(b), testenv.Home(b)
			a := e.make(coldHome).Available(context.Background())
			if !a.Usable {
				b.Skipf("engine %s: %s", e.name, a.Reason)
			}
			if img, err := image.Locate(coldHome, "default"); e.name == "qemu" && (err != nil || img.Manifest.Kernel == nil) {
				b.Skip("no VM image")
			}
			bench.Env("engine "+e.name, a.Reason)
			cold := benchPoolManager(b, coldHome, e.make(coldHome), nil)
			pooled := benchPoolManager(b, poolHome, e.make(poolHome), map[string]int{e.name: 1})
			pooled.StartPool()
			req := sandbox.CreateRequest{Engine: e.name}
			bench.Compare(b, e.rounds,
				bench.Case{Name: "baseline", Op: func(b *testing.B) time.Duration { return enginetest.CreateFirstPrint(b, cold, req) }},
				bench.Case{Name: "pooled", Op: func(b *testing.B) time.Duration {
					waitPoolReady(b, pooled, 1)
					return enginetest.CreateFirstPrint(b, pooled, req)
				}})
		})
	}
}

func benchPoolManager(b *testing.B, home string, eng sandbox.Engine, pools map[string]int) *sandbox.Manager {
	b.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}, Pools: pools, PoolConcurrency: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		m.DrainPool(ctx)
		m.Close()
		st.Close()
	})
	return m
}

// waitPoolReady waits (untimed) until n pooled boxes are ready.
func waitPoolReady(b *testing.B, m *sandbox.Manager, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		bs, err := m.PoolBoxes(context.Background())
		ready := 0
		for _, x := range bs {
			if x.Status == sandbox.StatusPooled {
				ready++
			}
		}
		if err == nil && ready >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the pool never held %d ready boxes (%d rows, %v)", n, len(bs), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
