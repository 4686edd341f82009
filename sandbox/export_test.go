package sandbox

import (
	"context"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
)

// SetPoolWarm replaces the pooled boxes' warm-up (tests whose fake boxes
// run the agent on the host, where the image's interpreters are not).
func SetPoolWarm(m *Manager, warm func(context.Context, *client.Client) error) { m.pool.warm = warm }

// ReconcileSnapshots runs only the snapshot part of Reconcile (tests: the
// box part waits for box locks a test may hold).
func (m *Manager) ReconcileSnapshots(ctx context.Context) ReconcileReport {
	var rep ReconcileReport
	m.reconcileSnapshots(ctx, &rep)
	return rep
}

// SetRemoteListTimeout shortens how long a listing of a Remote engine's
// boxes may take (tests of a cluster that does not answer).
func SetRemoteListTimeout(d time.Duration) func() {
	old := remoteListTimeout
	remoteListTimeout = d
	return func() { remoteListTimeout = old }
}

// Home is the manager's home directory.
func (m *Manager) Home() string { return m.cfg.Home }
