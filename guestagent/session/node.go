package session

import (
	"context"
	_ "embed"
	"strings"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

//go:embed driver.js
var driverJS string

func startNode(ctx context.Context, m *Manager, k key, env []string, cwd string, cred *syscall.Credential) (interp, error) {
	d, err := startDriver(ctx, m, "Node.js", []string{m.cfg.Node, "--expose-internals", "-e", driverJS}, env, cwd, cred)
	if err != nil {
		if p := lastTail(err); strings.Contains(p, "bad option") {
			return nil, wire.Errorf(wire.CodeNotFound, "this box's node does not accept --expose-internals; JavaScript sessions need Node.js 12 or later (use fresh: true)")
		}
		return nil, err
	}
	return d, nil
}
