package cli

import (
	"fmt"
	"log/slog"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
)

// engineNames lists every engine boxlite-mcp knows, in the order "auto"
// prefers them.
var engineNames = []string{"krun", "qemu", "jail"}

// engines builds the engines this binary offers, in preference order. only
// restricts the server to one engine ("" or "auto": all of them).
func engines(home string, log *slog.Logger, only string) ([]sandbox.Engine, error) {
	all := map[string]sandbox.Engine{
		"jail": jail.New(jail.Config{Home: home, Logger: log}),
	}
	for name, e := range extraEngines(home, log) {
		all[name] = e
	}
	if only != "" && only != "auto" {
		e, ok := all[only]
		if !ok {
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

// extraEngines is where the VM engines register (see engines_vm.go).
var extraEngines = func(home string, log *slog.Logger) map[string]sandbox.Engine { return nil }

// vmImage adds the VM boot steps to an image build, when a VM engine is built in.
var vmImage = func(cfg *image.BuildConfig) {}
