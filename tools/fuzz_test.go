package tools

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// FuzzToolArguments sends random and adversarial arguments to every tool
// through the MCP server's message handler. The server must never panic and
// must always answer. The engine is the fake one marked unusable, so no
// box can be created and no fuzzed code ever runs on the host.
func FuzzToolArguments(f *testing.F) {
	seeds := []string{`{}`, `null`, `[]`, `"x"`, `1`, `{"box":""}`, `{"box":"nope","code":"print(1)"}`,
		`{"box":1}`, `{"cpus":-1}`, `{"cpus":1e99}`, `{"name":"a/b"}`, `{"env":{"A=B":"x"}}`, `{"env":[1]}`,
		`{"encoding":"base64","content":"!!!","box":"x","path":"/x"}`, `{"mode":"999","box":"x","path":"/a","content":""}`,
		`{"path":"relative","box":"x"}`, `{"max_bytes":0,"box":"x","path":"/x"}`, `{"status":"weird"}`,
		`{"timeout_seconds":99999,"box":"x","code":"x"}`, `{"language":"cobol","box":"x","code":"x"}`,
		`{"box":"x","code":"x","bogus":true}`, `{"ttl_seconds":-5}`, `{"engine":"jail"}`}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	home := f.TempDir()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	eng := &enginetest.Fake{W: enginetest.NewWorld(), EngineName: "jail", Unusable: "fuzzing: no boxes"}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	srv, err := NewMCPServer(Config{Manager: m})
	if err != nil {
		f.Fatal(err)
	}
	names := ToolNames()
	f.Fuzz(func(t *testing.T, tool uint8, args []byte) {
		name := names[int(tool)%len(names)]
		raw := json.RawMessage(args)
		if !json.Valid(args) {
			raw, _ = json.Marshal(string(args)) // still a well-formed request
		}
		msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
			"params": map[string]any{"name": name, "arguments": raw}})
		resp := srv.HandleMessage(context.Background(), msg)
		if resp == nil {
			t.Fatalf("%s(%s): no answer", name, args)
		}
		out, _ := json.Marshal(resp)
		// mcp-go's recovery middleware turns a handler panic into this
		// error text; a fuzzed argument that merely says "panic" is fine.
		if strings.Contains(string(out), "panic recovered in") {
			t.Fatalf("%s(%s) panicked: %s", name, args, out)
		}
		if r, ok := resp.(mcp.JSONRPCResponse); ok {
			if res, ok := r.Result.(*mcp.CallToolResult); ok && !res.IsError && name != "list_boxes" && name != "list_snapshots" {
				t.Fatalf("%s(%s) succeeded with no usable engine: %s", name, args, out)
			}
		}
	})
}
