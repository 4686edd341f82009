package sandbox

import (
	"context"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// NetworkStatus returns the network of box b as its helper reports it:
// policy, byte counters and the refusals seen since since (the zero time:
// all it remembers). It is nil for a box without network or whose helper
// does not answer (a stopped box). It never starts a box.
func (m *Manager) NetworkStatus(ctx context.Context, b *Box, since time.Time) *network.Status {
	if b == nil || !b.Spec.Network || b.Spec.Socket == "" {
		return nil
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := network.Query(qctx, network.ControlPath(b.Spec.Socket), since)
	if err != nil {
		if b.Status == StatusRunning {
			m.log.Debug("network helper did not answer", "box_id", b.ID, "err", err)
		}
		return nil
	}
	return s
}

// NetworkPolicy returns box b's network policy.
func NetworkPolicy(b *Box) network.Policy {
	p, _ := network.ParsePolicy(b.Spec.Network, b.Spec.NetworkAllow)
	return p
}
