package qemu

import (
	"context"
	"net"
	"strings"

	"github.com/mdlayher/vsock"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// cidBase is the guest CID of the box with id range 0. CIDs 0-2 are
// reserved, and low ones are what other tools pick first; cidBase plus
// every range (persist.MaxIDRanges of them) stays far below 2^32-1.
const cidBase = 1000

// guestCID is the vsock context id (CID) of spec's guest: cidBase plus the
// box's id range. The registry gives every box of a home its own range (a
// unique index in the store, allocated in the insert and held until the
// box is destroyed, whichever server starts it), so no two boxes of one
// home ever share a CID: it replaces a hash of the box id, whose collisions
// failed both boot tries. Across homes on one host, or against another
// program that sets guest CIDs (another VMM, libvirt), it is not unique:
// QEMU then fails with EADDRINUSE, which bootError reports as such (see
// cidTaken) instead of retrying.
func guestCID(spec sandbox.Spec) (uint32, error) {
	if _, err := spec.HostIDBase(); err != nil { // checks the range
		return 0, err
	}
	return cidBase + uint32(spec.IDRange), nil
}

// cidTaken reports whether QEMU's log says the guest CID it was given is
// used by another VM on the host (vhost-vsock's VHOST_VSOCK_SET_GUEST_CID
// failing with EADDRINUSE).
func cidTaken(qemuLog string) bool {
	return strings.Contains(qemuLog, "unable to set guest cid") && strings.Contains(qemuLog, "Address already in use")
}

// dialVsock connects to a guest's vsock port, cancelled with ctx. A
// variable so tests can stand in for a guest (CI hosts have no
// /dev/vhost-vsock).
var dialVsock = func(ctx context.Context, cid, port uint32) (net.Conn, error) {
	c, err := vsock.DialContext(ctx, cid, port, nil)
	if err != nil {
		return nil, err // never a typed nil inside the interface
	}
	return c, nil
}

// dialGuest connects to the agent of the guest with CID cid. The connect
// runs on the calling goroutine and ends with ctx, so nothing outlives a
// cancelled call; a connection that completes just as ctx ends is closed,
// not handed to a caller that has given up.
func dialGuest(ctx context.Context, cid uint32) (net.Conn, error) {
	c, err := dialVsock(ctx, cid, vsockPort)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
