package qemu_test

import (
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// BenchmarkQemuSnapshots: cold create→first result against create from a
// memory snapshot→first result (target: at most half), and the snapshot's
// save time and size. Few rounds: every cold round boots under TCG.
func BenchmarkQemuSnapshots(b *testing.B) {
	requireQEMU(b)
	home := testenv.Home(b)
	benchEngine(home)
	enginetest.BenchSnapshots(b, server(b, home), 3, sandbox.CreateRequest{Engine: "qemu", MemoryMiB: 512})
}
