package cli

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// engineNames lists every engine boxlite-mcp knows, in the order "auto"
// prefers them.
var engineNames = []string{"krun", "qemu", "jail"}

// engines builds the engines this binary offers, in preference order. only
// restricts the server to one engine ("" or "auto": all of them).
func engines(home string, log *slog.Logger, only string) ([]sandbox.Engine, error) {
	all := map[string]sandbox.Engine{}
	for name, newEngine := range engineMakers {
		all[name] = newEngine(home, log)
	}
	if only != "" && only != "auto" {
		e, ok := all[only]
		if !ok {
			if slices.Contains(engineNames, only) {
				return nil, usageError{fmt.Sprintf("--engine %q: this boxlite-mcp has no %s engine (krun needs a cgo build, jail and qemu need Linux)", only, only)}
			}
			return nil, usageError{fmt.Sprintf("--engine %q: want auto, krun, qemu or jail", only)}
		}
		return []sandbox.Engine{e}, nil
	}
	var out []sandbox.Engine
	for _, n := range engineNames {
		if e, ok := all[n]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// engineMakers holds the engines this build has, by name. Engines register
// from build-tagged files: jail and qemu on Linux (engines_linux.go), krun
// where cgo is available (engines_krun.go).
var engineMakers = map[string]func(home string, log *slog.Logger) sandbox.Engine{}

// hiddenCommands are re-exec entry points of engines (the krun shim), by
// their first argument; each never returns.
var hiddenCommands = map[string]func(){}

// vmImage adds the VM boot steps to an image build, when a VM engine is built in.
var vmImage = func(cfg *image.BuildConfig) {}
