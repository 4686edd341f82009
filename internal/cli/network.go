package cli

import (
	"os"

	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// netHost is the host side of the boxes' networks, shared by the engines
// (serve --resolv-conf sets its upstream resolvers).
var netHost network.Host

// Each box with network has a helper process: this binary re-executed
// with network.HelperArg.
func init() {
	hiddenCommands[network.HelperArg] = func() { os.Exit(network.HelperMain()) }
}
