package krun

import (
	"context"
	"encoding/json"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// startNetwork starts the box's network helper for a box with network,
// listening on the box's link socket, which libkrun connects its virtio-net
// device to (krun_add_net_unixstream, the passt/gvproxy stream framing).
// It returns the socket and the agent's arguments that configure eth0.
// A box never gets libkrun's TSI: its only network is this link.
func (e *Engine) startNetwork(ctx context.Context, spec sandbox.Spec, lib *Lib, stage string) (id proc.ID, link string, agentArgs []string, err error) {
	if !lib.CanNetwork() {
		return id, "", nil, sandbox.Errorf(sandbox.ErrUnavailable, "this libkrun has no %s (the box's network); upgrade libkrun", netUnixstream)
	}
	policy, err := network.ParsePolicy(spec.Network, spec.NetworkAllow)
	if err != nil {
		return id, "", nil, sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%v", err)
	}
	uid, err := spec.HelperUID()
	if err != nil {
		return id, "", nil, err
	}
	link = network.LinkPath(spec.Socket)
	id, err = network.Start(ctx, network.Launch{Host: e.cfg.Net, BoxID: spec.ID, Policy: policy,
		Control: network.ControlPath(spec.Socket), Listen: link, Log: filepath.Join(spec.BoxDir, "network.log"),
		Stage: stage, UID: uid})
	if err != nil {
		return id, "", nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the box's network")
	}
	cfg, _ := json.Marshal(network.GuestConfig())
	return id, link, []string{"--net", string(cfg)}, nil
}
