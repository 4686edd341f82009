package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// startNetwork starts the box's network helper (confined, as the box's
// helper uid) on one end of a stream socket pair and returns the other, the
// VM's end of the link. One helper serves one QEMU: it ends when that
// QEMU's end closes.
func (e *Engine) startNetwork(ctx context.Context, spec sandbox.Spec, img *image.Image) (proc.ID, *os.File, error) {
	policy, err := network.ParsePolicy(spec.Network, spec.NetworkAllow)
	if err != nil {
		return proc.ID{}, nil, sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%v", err)
	}
	uid, err := spec.HelperUID()
	if err != nil {
		return proc.ID{}, nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return proc.ID{}, nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot make the box's network link")
	}
	helperEnd, vmEnd := os.NewFile(uintptr(fds[0]), "link-helper"), os.NewFile(uintptr(fds[1]), "link-vm")
	defer helperEnd.Close()
	id, err := network.Start(ctx, network.Launch{Host: e.cfg.Net, BoxID: spec.ID, Policy: policy,
		Control: network.ControlPath(spec.Socket), Stream: helperEnd,
		Log:   filepath.Join(spec.BoxDir, "network.log"),
		Stage: filepath.Join(img.RootfsDir(), image.AgentPath), UID: uid})
	if err != nil {
		vmEnd.Close()
		return proc.ID{}, nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the box's network")
	}
	return id, vmEnd, nil
}

// netArgs are QEMU's network arguments: a virtio-net NIC on QEMU 7.2's
// stream netdev over the connected descriptor fd (the helper's link). No
// other network backend is ever given (QEMU's own slirp reached the host's
// loopback), and a confined QEMU has no network namespace to reach it by.
func netArgs(fd int) []string {
	return []string{"-netdev", fmt.Sprintf("stream,id=net0,server=off,addr.type=fd,addr.str=%d", fd),
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
