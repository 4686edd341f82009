package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// These tests drive the real MCP server (message handler, tool handlers,
// rendering) on the fake engine, whose boxes are the real agent run
// in-process: commands run on this host, as the test user.

// messageLimit is what one encoded response may weigh whatever the box
// prints: far below the 10 MiB frame limit of the TypeScript client.
const messageLimit = 4 << 20

// boxServer returns an MCP server with cfg and the id of a running box.
func boxServer(t *testing.T, cfg Config) (*server.MCPServer, string) {
	t.Helper()
	home := t.TempDir()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := enginetest.NewWorld()
	t.Cleanup(w.KillAll)
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: w, EngineName: "jail"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	cfg.Manager = m
	srv, err := NewMCPServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, r := callTool(t, srv, "create_box", map[string]any{"engine": "jail"})
	if r.IsError {
		t.Fatalf("create_box: %s", textOf(r))
	}
	return srv, r.StructuredContent.(BoxOut).ID
}

// callTool sends a tools/call through the server's message handler and
// returns the response as a transport would write it, and the result.
func callTool(t *testing.T, srv *server.MCPServer, name string, args map[string]any) ([]byte, *mcp.CallToolResult) {
	t.Helper()
	msg, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": name, "arguments": args}})
	if err != nil {
		t.Fatal(err)
	}
	resp := srv.HandleMessage(context.Background(), msg)
	raw, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := resp.(mcp.JSONRPCResponse)
	if !ok {
		t.Fatalf("%s: not a result: %.300s", name, raw)
	}
	return raw, r.Result.(*mcp.CallToolResult)
}

// repeatTo repeats unit to at least n bytes.
func repeatTo(unit string, n int) []byte {
	return bytes.Repeat([]byte(unit), n/len(unit)+1)
}

func c0() string {
	var b strings.Builder
	for c := byte(1); c < 0x20; c++ {
		b.WriteByte(c)
	}
	return b.String()
}

// worstOutputs are the box outputs that cost the most once JSON-encoded.
var worstOutputs = []struct {
	name string
	unit string
}{
	{"all NUL", "\x00"},       // \u0000: 6 bytes each
	{"all C0 controls", c0()}, // \u0001..\u001f, some 2 bytes
	{"invalid UTF-8", "\xff"}, // U+FFFD per run
	{"invalid between NULs", "\xfe\x00"},
	{"HTML-escaped", "<>&"},       // \u003c: 6 bytes each
	{"line separators", "\u2028"}, // 3 bytes become 6
	{"4-byte emoji", "😀"},
}

// TestResultSizeWorstCase: whatever a box prints, on stdout, stderr or
// both, or holds in a file, the encoded response stays under messageLimit,
// says it is truncated when it had to be, returns a correct prefix, and its
// text does not repeat the large output.
func TestResultSizeWorstCase(t *testing.T) {
	const size = 4 << 20 // over the raw limits of output (1 MiB) and read_file (2 MiB)
	dir := t.TempDir()
	for _, limit := range []int64{0, 16 << 20} { // the default output limit, and a large one
		srv, box := boxServer(t, Config{OutputLimit: limit})
		for _, w := range worstOutputs {
			file := filepath.Join(dir, strings.ReplaceAll(w.name, " ", "_"))
			data := repeatTo(w.unit, size)
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			printed := strings.ToValidUTF8(string(data), "\uFFFD")
			enc, _ := json.Marshal(printed)
			mustTruncate := len(enc) > messageLimit
			calls := []struct {
				label, tool string
				args        map[string]any
			}{
				{"stdout", "exec_command", map[string]any{"box": box, "command": "cat " + file}},
				{"stderr", "exec_command", map[string]any{"box": box, "command": "cat " + file + " >&2"}},
				{"both", "run_code", map[string]any{"box": box, "language": "sh", "code": "cat " + file + "; cat " + file + " >&2"}},
				{"file", "read_file", map[string]any{"box": box, "path": file, "max_bytes": MaxReadBytes}},
			}
			for _, c := range calls {
				raw, r := callTool(t, srv, c.tool, c.args)
				what := w.name + ", " + c.label + ", " + c.tool
				if r.IsError {
					t.Errorf("%s (limit %d): error %s", what, limit, textOf(r))
					continue
				}
				t.Logf("%s (limit %d): response %d bytes encoded", what, limit, len(raw))
				if len(raw) >= messageLimit {
					t.Errorf("%s (limit %d): response is %d bytes encoded; want < %d", what, limit, len(raw), messageLimit)
				}
				if text, _ := json.Marshal(textOf(r)); len(text) > 128<<10 {
					t.Errorf("%s (limit %d): the text content repeats %d encoded bytes of output", what, limit, len(text))
				}
				truncated := false
				switch out := r.StructuredContent.(type) {
				case RunCodeOut: // run_code
					truncated = out.Truncated
					if !strings.HasPrefix(printed, out.Stdout) || !strings.HasPrefix(printed, out.Stderr) {
						t.Errorf("%s: stdout or stderr is not a prefix of what the box printed", what)
					}
				case RunOut:
					truncated = out.Truncated
					if !strings.HasPrefix(printed, out.Stdout) || !strings.HasPrefix(printed, out.Stderr) {
						t.Errorf("%s: stdout or stderr is not a prefix of what the box printed", what)
					}
				case ReadFileOut:
					truncated = out.Truncated
				}
				if mustTruncate && !truncated {
					t.Errorf("%s (limit %d): truncated is not set", what, limit)
				}
			}
		}
	}
}

// TestArgumentsWithNUL: what the kernel cannot take (a NUL in an
// environment value, an argument, a path) is an argument error naming the
// argument, not an internal error.
func TestArgumentsWithNUL(t *testing.T) {
	srv, box := boxServer(t, Config{})
	tests := []struct {
		tool string
		args map[string]any
		want string // in the message
	}{
		{"exec_command", map[string]any{"box": box, "command": "true", "env": map[string]string{"GOOD": "x", "BAD_ONE": "a\x00b"}}, "BAD_ONE"},
		{"run_code", map[string]any{"box": box, "code": "print(1)", "env": map[string]string{"VAL": "\x00"}}, "VAL"},
		{"exec_command", map[string]any{"box": box, "command": "true", "env": map[string]string{"A=B": "x"}}, `"A=B"`},
		{"exec_command", map[string]any{"box": box, "command": "true", "env": map[string]string{"": "x"}}, `""`},
		{"exec_command", map[string]any{"box": box, "command": "true", "cwd": "/tmp\x00/x"}, "cwd"},
		{"exec_command", map[string]any{"box": box, "command": "echo a\x00b"}, "command"},
		{"run_code", map[string]any{"box": box, "code": "print(1)\x00"}, "code"},
		{"read_file", map[string]any{"box": box, "path": "/etc\x00/passwd"}, "path"},
		{"write_file", map[string]any{"box": box, "path": "/tmp/a\x00b", "content": "x"}, "path"},
		{"create_box", map[string]any{"engine": "jail", "env": map[string]string{"BOX_ENV": "x\x00"}}, "BOX_ENV"},
	}
	for _, tt := range tests {
		_, r := callTool(t, srv, tt.tool, tt.args)
		msg := textOf(r)
		if !r.IsError || strings.Contains(msg, "internal error") || !strings.Contains(msg, tt.want) {
			t.Errorf("%s %v: isError=%v %q; want an argument error naming %s", tt.tool, tt.args, r.IsError, msg, tt.want)
		}
	}
}
