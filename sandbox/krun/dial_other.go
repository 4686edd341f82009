//go:build !linux

package krun

import (
	"context"
	"net"
)

// dialSocket dials the agent's socket. Off Linux the shim is not confined:
// it runs as the server's own user, so its directory is no more hostile
// than the server's own files.
func dialSocket(ctx context.Context, path string, uid uint32) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "unix", path)
}
