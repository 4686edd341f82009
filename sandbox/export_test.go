package sandbox

import (
	"context"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
)

// SetPoolWarm replaces the pooled boxes' warm-up (tests whose fake boxes
// run the agent on the host, where the image's interpreters are not).
func SetPoolWarm(m *Manager, warm func(context.Context, *client.Client) error) { m.pool.warm = warm }
