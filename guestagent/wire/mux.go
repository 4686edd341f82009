package wire

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// YamuxConfig is the multiplexer configuration both sides use.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 1024
	c.MaxStreamWindowSize = 4 << 20 // lets one stream move hundreds of MiB/s
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.LogOutput = io.Discard
	return c
}
