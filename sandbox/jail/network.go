package jail

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// startNetwork gives a box with network its eth0: a tap device created and
// configured in the box's network namespace (pid is the jail's first
// process, still waiting for its start signal), served by the box's network
// helper, which applies the box's policy. The tap lives as long as the
// helper holds it and the namespace exists; the helper ends with the box.
func (e *Engine) startNetwork(ctx context.Context, spec sandbox.Spec, pid int, stage string) (proc.ID, error) {
	policy, err := network.ParsePolicy(spec.Network, spec.NetworkAllow)
	if err != nil {
		return proc.ID{}, err
	}
	uid, err := spec.HelperUID()
	if err != nil {
		return proc.ID{}, err
	}
	tap, err := network.CreateTap(pid, network.GuestConfig())
	if err != nil {
		return proc.ID{}, fmt.Errorf("the box's network device: %w", err)
	}
	defer tap.Close() // the helper has its own copy
	return network.Start(ctx, network.Launch{Host: e.cfg.Net, BoxID: spec.ID, Policy: policy,
		Control: network.ControlPath(spec.Socket), Link: tap, Log: filepath.Join(spec.BoxDir, "network.log"),
		Stage: stage, UID: uid})
}
