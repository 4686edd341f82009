package tools

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// NetworkDenial is a connection or name lookup of the box that its network
// policy refused.
type NetworkDenial struct {
	Host     string `json:"host" jsonschema:"Address or host name the box tried to reach"`
	Port     int    `json:"port" jsonschema:"Destination port (53 for a refused name lookup)"`
	Protocol string `json:"protocol" jsonschema:"tcp, udp or dns"`
	Reason   string `json:"reason" jsonschema:"Why it was refused"`
	Count    int    `json:"count" jsonschema:"How often it was refused (during this call or earlier)"`
}

// NetworkOut is a box's network in list_boxes.
type NetworkOut struct {
	Mode          string   `json:"mode" jsonschema:"off (only lo), public (the public internet) or allowlist (only the allow list)"`
	Allow         []string `json:"allow,omitempty" jsonschema:"The allow list (network_allow)"`
	BytesSent     int64    `json:"bytes_sent" jsonschema:"Bytes the box sent since it last started (0 when stopped)"`
	BytesReceived int64    `json:"bytes_received" jsonschema:"Bytes the box received since it last started (0 when stopped)"`
}

// networkOut describes box b's network, with counters when it runs.
func (s *Server) networkOut(ctx context.Context, b *sandbox.Box) NetworkOut {
	p := sandbox.NetworkPolicy(b)
	out := NetworkOut{Mode: p.Mode(), Allow: p.Entries()}
	if len(out.Allow) == 0 {
		out.Allow = nil
	}
	if b.Status == sandbox.StatusRunning {
		if st := s.m.NetworkStatus(ctx, b, time.Now()); st != nil {
			out.BytesSent, out.BytesReceived = int64(st.Sent), int64(st.Received)
		}
	}
	return out
}

// renderNetwork is list_boxes' text for a box's network.
func renderNetwork(n NetworkOut) string {
	switch n.Mode {
	case "off":
		return "net=off"
	case "public":
		return fmt.Sprintf("net=public sent=%d recv=%d", n.BytesSent, n.BytesReceived)
	}
	return fmt.Sprintf("net=only(%s) sent=%d recv=%d", clipLine(strings.Join(n.Allow, ",")), n.BytesSent, n.BytesReceived)
}

// reportDenials wraps run_code and exec_command: the box's network
// refusals during the call are added to the result as network_denied
// (deduplicated, capped by the network helper) and a line of text.
func reportDenials[T any](s *Server, box func(T) string, h func(context.Context, mcp.CallToolRequest, T) (*mcp.CallToolResult, error)) func(context.Context, mcp.CallToolRequest, T) (*mcp.CallToolResult, error) {
	return func(ctx context.Context, req mcp.CallToolRequest, in T) (*mcp.CallToolResult, error) {
		since := time.Now()
		ran := &ranIn{}
		r, err := h(context.WithValue(ctx, ranInKey{}, ran), req, in)
		if err != nil || r == nil || r.IsError {
			return r, err
		}
		s.addDenials(ctx, box(in), ran.box, since, r)
		return r, nil
	}
}

// ranIn is where a handler under reportDenials notes the box its call ran
// in (the manager returns it), which saves looking the box up again.
type (
	ranInKey struct{}
	ranIn    struct{ box *sandbox.Box }
)

// noteBox records b as the box of the call ctx belongs to.
func noteBox(ctx context.Context, b *sandbox.Box) {
	if r, ok := ctx.Value(ranInKey{}).(*ranIn); ok && b != nil {
		r.box = b
	}
}

func (s *Server) addDenials(ctx context.Context, ref string, b *sandbox.Box, since time.Time, r *mcp.CallToolResult) {
	if b == nil {
		var err error
		if b, err = s.m.Get(ctx, Owner(ctx), ref); err != nil {
			return
		}
	}
	st := s.m.NetworkStatus(ctx, b, since)
	if st == nil || len(st.Denied) == 0 {
		return
	}
	denied := make([]NetworkDenial, 0, len(st.Denied))
	var lines []string
	for _, d := range st.Denied {
		denied = append(denied, NetworkDenial{Host: d.Host, Port: int(d.Port), Protocol: d.Protocol, Reason: d.Reason, Count: d.Count})
		lines = append(lines, fmt.Sprintf("%s %s port %d: %s", d.Protocol, d.Host, d.Port, d.Reason))
	}
	switch v := r.StructuredContent.(type) {
	case RunOut:
		v.NetworkDenied = denied
		r.StructuredContent = v
	case RunCodeOut:
		v.NetworkDenied = denied
		r.StructuredContent = v
	default:
		return
	}
	text := fmt.Sprintf("network policy (%s) refused:\n  %s\n", st.Policy, strings.Join(lines, "\n  "))
	if st.DeniedOmitted > 0 {
		text += fmt.Sprintf("  ... and %d more\n", st.DeniedOmitted)
	}
	r.Content = append(r.Content, mcp.NewTextContent(sanitize(text)))
}
