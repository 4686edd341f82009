package qemu

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// startNetwork starts the box's network helper, listening for the VM's
// stream netdev on the box's link socket. One helper serves one QEMU: it
// ends when that QEMU closes the link (or never connects within the
// helper's accept timeout).
func (e *Engine) startNetwork(ctx context.Context, spec sandbox.Spec) (proc.ID, error) {
	policy, err := network.ParsePolicy(spec.Network, spec.NetworkAllow)
	if err != nil {
		return proc.ID{}, sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%v", err)
	}
	id, err := network.Start(ctx, network.Launch{Host: e.cfg.Net, BoxID: spec.ID, Policy: policy,
		Control: network.ControlPath(spec.Socket), Listen: network.LinkPath(spec.Socket),
		Log: filepath.Join(spec.BoxDir, "network.log")})
	if err != nil {
		return proc.ID{}, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the box's network")
	}
	return id, nil
}

// netArgs are QEMU's network arguments: a virtio-net NIC on QEMU 7.2's
// stream netdev, connected to the helper's link socket. No other network
// backend is ever given (QEMU's own slirp reached the host's loopback).
func netArgs(spec sandbox.Spec) []string {
	if !spec.Network {
		return nil
	}
	path := strings.ReplaceAll(network.LinkPath(spec.Socket), ",", ",,") // QEMU option escaping
	return []string{"-netdev", "stream,id=net0,server=off,addr.type=unix,addr.path=" + path,
		"-device", "virtio-net-device,netdev=net0,mac=" + network.GuestMAC}
}

// bootNet is the guest's network configuration for its agent.
func bootNet(spec sandbox.Spec) *netconf.Config {
	if !spec.Network {
		return nil
	}
	c := network.GuestConfig()
	return &c
}
