package tools

import (
	"context"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// TestDenialsUseTheCallsBox: run_code (session and fresh) and exec_command
// report the network refusals of the box the call ran in, as the manager
// returned it, without looking the box up again (a lookup per call was a
// sixth of a warm call's server CPU).
func TestDenialsUseTheCallsBox(t *testing.T) {
	f := &fakeManager{network: &sandbox.NetworkState{Denied: []sandbox.NetworkDenial{{Host: "203.0.113.7", Port: 443, Protocol: "tcp", Reason: "not allowed", Count: 2}}}}
	srv := fakeServer(t, f, Config{})
	box := fakeBox().ID
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"run_code", map[string]any{"box": box, "code": "1+1"}},
		{"run_code", map[string]any{"box": box, "code": "1+1", "fresh": true}},
		{"exec_command", map[string]any{"box": box, "command": "true"}},
	} {
		r := callWith(t, context.Background(), srv, c.tool, c.args, nil)
		if r.IsError {
			t.Fatalf("%s %v: %s", c.tool, c.args, textOf(r))
		}
		var denied []NetworkDenial
		switch v := r.StructuredContent.(type) {
		case RunOut:
			denied = v.NetworkDenied
		case RunCodeOut:
			denied = v.NetworkDenied
		default:
			t.Fatalf("%s: structured content %T", c.tool, v)
		}
		if len(denied) != 1 || denied[0].Host != "203.0.113.7" || denied[0].Count != 2 {
			t.Fatalf("%s %v: network_denied %+v", c.tool, c.args, denied)
		}
	}
	if n := f.gets.Load(); n != 0 {
		t.Fatalf("%d box lookups besides the calls' own", n)
	}
}
