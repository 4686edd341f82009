package qemu

import (
	"context"
	"net"

	"github.com/mdlayher/vsock"
)

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
