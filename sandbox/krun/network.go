package krun

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// startNetwork starts the box's network helper (confined, as the box's
// helper uid) for a box with network, on one end of a stream socket pair,
// and returns the other, the VM's end of the link, which libkrun's
// virtio-net device takes as a descriptor (krun_add_net_unixstream, the
// passt/gvproxy stream framing): the confined shim needs no path for it.
// It also returns the agent's arguments that configure eth0. A box never
// gets libkrun's TSI: its only network is this link.
func (e *Engine) startNetwork(ctx context.Context, spec sandbox.Spec, lib *Lib, stage string) (id proc.ID, link *os.File, agentArgs []string, err error) {
	if !lib.CanNetwork() {
		return id, nil, nil, sandbox.Errorf(sandbox.ErrUnavailable, "this libkrun has no %s (the box's network); upgrade libkrun", netUnixstream)
	}
	policy, err := network.ParsePolicy(spec.Network, spec.NetworkAllow)
	if err != nil {
		return id, nil, nil, sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%v", err)
	}
	uid, err := spec.HelperUID()
	if err != nil {
		return id, nil, nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return id, nil, nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot make the box's network link")
	}
	helperEnd, vmEnd := os.NewFile(uintptr(fds[0]), "link-helper"), os.NewFile(uintptr(fds[1]), "link-vm")
	defer helperEnd.Close()
	id, err = network.Start(ctx, network.Launch{Host: e.cfg.Net, BoxID: spec.ID, Policy: policy,
		Control: network.ControlPath(spec.Socket), Stream: helperEnd, Log: filepath.Join(spec.BoxDir, "network.log"),
		Stage: stage, UID: uid})
	if err != nil {
		vmEnd.Close()
		return id, nil, nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the box's network")
	}
	cfg, _ := json.Marshal(network.GuestConfig())
	return id, vmEnd, []string{"--net", string(cfg)}, nil
}
