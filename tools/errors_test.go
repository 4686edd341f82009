package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// TestToolErrorMapping drives every tool through the real MCP server with
// a fake manager (at the Manager interface this package owns) that fails
// with each error class of sandbox/errs.go, and checks the one mapping in
// toolError: an isError result (never a protocol error) whose text is the
// public message plus the class's advice, and none of the internal cause
// (a host path, a C return code).
func TestToolErrorMapping(t *testing.T) {
	// The cause carries what must never reach an agent.
	cause := errors.New("open /var/lib/boxlite/boxes/01kx/disk.qcow2: krun_start_enter failed: -2")
	const public = "box 01kx could not do it"
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"create_box", map[string]any{}},
		{"run_code", map[string]any{"box": "b", "code": "1"}}, // a session
		{"run_code", map[string]any{"box": "b", "code": "1", "fresh": true}},
		{"run_code", map[string]any{"box": "b", "code": "echo", "language": "bash"}},
		{"exec_command", map[string]any{"box": "b", "command": "true"}},
		{"write_file", map[string]any{"box": "b", "path": "/x", "content": "y"}},
		{"read_file", map[string]any{"box": "b", "path": "/x"}},
		{"list_boxes", map[string]any{}},
		{"destroy_box", map[string]any{"box": "b"}},
	}
	classes := []struct {
		name   string
		err    error
		cancel bool // the client cancels the call while it runs
		want   string
	}{
		{"not found", sandbox.Wrapf(sandbox.ErrNotFound, cause, public), false, public},
		{"already exists", sandbox.Wrapf(sandbox.ErrAlreadyExists, cause, public), false, public},
		{"invalid argument", sandbox.Wrapf(sandbox.ErrInvalidArgument, cause, public), false, public},
		{"failed precondition", sandbox.Wrapf(sandbox.ErrFailedPrecondition, cause, public), false, public},
		{"resource exhausted", sandbox.Wrapf(sandbox.ErrResourceExhausted, cause, public), false,
			public + " (the host or the box is out of a resource; free some or ask for less)"},
		{"unavailable", sandbox.Wrapf(sandbox.ErrUnavailable, cause, public), false,
			public + " (try again; if it persists, destroy the box and create a new one)"},
		{"deadline exceeded", sandbox.Wrapf(sandbox.ErrDeadlineExceeded, cause, public), false, public},
		{"cancelled", sandbox.Wrapf(sandbox.ErrDeadlineExceeded, cause, public), true,
			"the call was cancelled; the work in the box was stopped"},
		{"internal", sandbox.Wrapf(sandbox.ErrInternal, cause, public), false,
			"internal error in boxlite-mcp (details in the server log): " + public},
		{"no class", fmt.Errorf("engine: %w", cause), false,
			"internal error in boxlite-mcp (details in the server log): internal error (see the server log)"},
		{"class wrapped further", fmt.Errorf("outer: %w", sandbox.Wrapf(sandbox.ErrUnavailable, cause, public)), false,
			public + " (try again; if it persists, destroy the box and create a new one)"},
	}
	for _, c := range classes {
		for _, call := range calls {
			name := fmt.Sprintf("%s/%s", c.name, call.tool)
			if call.args["fresh"] == true || call.args["language"] != nil {
				name += "-fresh"
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				f := &fakeManager{err: c.err}
				if c.cancel {
					f.beforeFail = cancel
				}
				srv := fakeServer(t, f, Config{})
				r := callWith(t, ctx, srv, call.tool, call.args, nil)
				text := textOf(r)
				if !r.IsError {
					t.Fatalf("not an isError result: %q", text)
				}
				want := c.want
				if c.cancel && call.tool == "run_code" && call.args["fresh"] == nil && call.args["language"] == nil {
					want = "the call was cancelled; the code was interrupted and the session keeps its state"
				}
				if text != want {
					t.Errorf("text %q\nwant %q", text, want)
				}
				for _, secret := range []string{"/var/lib", "disk.qcow2", "krun_start_enter", "-2"} {
					if strings.Contains(text, secret) {
						t.Errorf("text %q carries the internal %q", text, secret)
					}
				}
				if r.StructuredContent != nil {
					t.Errorf("an error result with structured content %v", r.StructuredContent)
				}
			})
		}
	}
}

// TestMissingInterpreterIsToldFromMissingBox: a fresh run whose program the box lacks
// (ErrNotInBox from the run and from the lookup alone) says which program
// is missing and what to do; a missing box (ErrNotFound alone) keeps the
// manager's message.
func TestMissingInterpreterIsToldFromMissingBox(t *testing.T) {
	missing := sandbox.Wrapf(sandbox.ErrNotFound, fmt.Errorf("%w: exec", sandbox.ErrNotInBox), "node: no such file or directory")
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"program missing", missing, "this box (image default) has no node, which run_code needs for this language"},
		{"box missing", sandbox.Errorf(sandbox.ErrNotFound, "no box %q", "b"), `no box "b"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := fakeServer(t, &fakeManager{err: c.err}, Config{})
			r := callWith(t, context.Background(), srv, "run_code", map[string]any{"box": "b", "code": "1", "language": "javascript", "fresh": true}, nil)
			if !r.IsError || !strings.HasPrefix(textOf(r), c.want) {
				t.Fatalf("isError %v, text %q; want it to start with %q", r.IsError, textOf(r), c.want)
			}
		})
	}
}
