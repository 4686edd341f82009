package jail_test

import (
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// BenchmarkJailSnapshots: cold create→first result against create from a
// snapshot→first result, and the snapshot's save time and size.
func BenchmarkJailSnapshots(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	enginetest.BenchSnapshots(b, server(b, home), 5, sandbox.CreateRequest{Engine: "jail"})
}
