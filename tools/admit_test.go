package tools

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// One owner's calls in flight are capped, so a client that opens calls
// without end (each holds server memory) cannot take the server from the
// others; the server's total is capped too. A call over a cap fails at
// once with an error saying which; the slot is free again when a call
// ends, and the error names no other owner's count.
func TestCallsInFlightAreCapped(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	f := &fakeManager{exec: func(ctx context.Context, req sandbox.ExecRequest, eio sandbox.ExecIO) (*sandbox.ExecResult, error) {
		started.Done()
		<-release
		return &sandbox.ExecResult{}, nil
	}}
	srv := fakeServer(t, f, Config{MaxCalls: 4, OwnerMaxCalls: 2})
	exec := func(owner string) *mcp.CallToolResult {
		return callWith(t, WithOwner(context.Background(), owner), srv, "exec_command", map[string]any{"box": "b", "command": "true"}, nil)
	}
	results := make(chan *mcp.CallToolResult, 4)
	hold := func(owners ...string) {
		for _, owner := range owners {
			started.Add(1)
			go func() { results <- exec(owner) }()
		}
		started.Wait()
	}
	hold("alice", "alice", "bob") // three calls in flight: alice's two, bob's one

	if r := exec("alice"); !r.IsError || !strings.Contains(textOf(r), "you have 2 running (limit 2 per client, --owner-max-calls)") {
		t.Fatalf("alice's third call: %+v", textOf(r))
	}
	// destroy_box, which ends the calls in a box, is held to the total only.
	if r := callWith(t, WithOwner(context.Background(), "alice"), srv, "destroy_box", map[string]any{"box": "b"}, nil); r.IsError {
		t.Fatalf("alice's destroy_box at her cap: %s", textOf(r))
	}
	hold("carol") // the server's four
	if r := exec("dave"); !r.IsError || !strings.Contains(textOf(r), "limit of 4 tool calls in flight (--max-calls)") || strings.Contains(textOf(r), "alice") {
		t.Fatalf("dave's call over the server's cap: %+v", textOf(r))
	}
	close(release)
	for i := 0; i < 4; i++ {
		if r := <-results; r.IsError {
			t.Fatalf("an admitted call failed: %s", textOf(r))
		}
	}
	f.exec = nil
	if r := exec("alice"); r.IsError {
		t.Fatalf("alice after her calls ended: %s", textOf(r))
	}
}
