package sandbox

import (
	"context"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// NetworkState is a box's network as its helper reports it.
type NetworkState struct {
	Policy         string // the policy, as text
	Mode           string // off, public or allowlist
	Sent, Received uint64 // bytes since the box last started
	// Denied are the refusals asked for, deduplicated; DeniedOmitted is how
	// many more there were.
	Denied        []NetworkDenial
	DeniedOmitted int
}

// NetworkDenial is a connection or name lookup the box's policy refused.
type NetworkDenial struct {
	Host     string
	Port     uint16
	Protocol string // tcp, udp or dns
	Reason   string
	// Count is how often it was refused; First and Last when.
	Count       int
	First, Last time.Time
}

// NetworkStatus returns the network of box b as its helper reports it:
// policy, byte counters and the refusals seen since since (the zero time:
// all it remembers). It is nil for a box without network or whose helper
// does not answer (a stopped box). It never starts a box.
func (m *Manager) NetworkStatus(ctx context.Context, b *Box, since time.Time) *NetworkState {
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
	st := &NetworkState{Policy: s.Policy, Mode: s.Mode, Sent: s.Sent, Received: s.Received, DeniedOmitted: s.DeniedOmitted,
		Denied: make([]NetworkDenial, 0, len(s.Denied))}
	for _, d := range s.Denied {
		st.Denied = append(st.Denied, NetworkDenial{Host: d.Host, Port: d.Port, Protocol: d.Protocol, Reason: d.Reason, Count: d.Count, First: d.First, Last: d.Last})
	}
	return st
}

// NetworkPolicy returns box b's network policy.
func NetworkPolicy(b *Box) network.Policy {
	p, _ := network.ParsePolicy(b.Spec.Network, b.Spec.NetworkAllow)
	return p
}
