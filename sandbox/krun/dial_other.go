//go:build !linux

package krun

import (
	"context"
	"errors"
	"net"
)

// dialSocket is Linux only, as the shim's confinement is.
func dialSocket(ctx context.Context, path string, uid uint32) (net.Conn, error) {
	return nil, errors.New("the krun shim's agent socket needs Linux (O_PATH)")
}
