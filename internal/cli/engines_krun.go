//go:build cgo

package cli

import (
	"log/slog"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/krun"
)

// The krun engine (cgo: libkrun is loaded with dlopen) and its shim, the
// hidden command each krun box runs in.
func init() {
	engineMakers["krun"] = func(home string, log *slog.Logger) sandbox.Engine {
		return krun.New(krun.Config{Home: home, Logger: log})
	}
	hiddenCommands[krun.ShimArg] = krun.ShimMain
}
