package tools

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

// stdioClient speaks JSON-RPC to an MCP server's stdio transport, in
// process, over pipes: what a desktop client does, minus process start.
type stdioClient struct {
	w  io.Writer
	r  *bufio.Reader
	id int
}

func newStdioClient(b *testing.B, srv *server.MCPServer) *stdioClient {
	b.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go server.NewStdioServer(srv).Listen(ctx, inR, outW)
	b.Cleanup(func() { cancel(); inW.Close(); outW.Close() })
	c := &stdioClient{w: inW, r: bufio.NewReaderSize(outR, 1<<20)}
	c.rpc(b, "initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{}, "clientInfo": map[string]any{"name": "bench", "version": "0"}})
	fmt.Fprintln(c.w, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return c
}

// rpc sends a request and returns its result.
func (c *stdioClient) rpc(b *testing.B, method string, params any) json.RawMessage {
	b.Helper()
	c.id++
	msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method, "params": params})
	if _, err := c.w.Write(append(msg, '\n')); err != nil {
		b.Fatal(err)
	}
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			b.Fatal(err)
		}
		var resp struct {
			ID     *int            `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if json.Unmarshal(line, &resp) != nil || resp.ID == nil || *resp.ID != c.id {
			continue // a notification
		}
		if resp.Error != nil {
			b.Fatalf("%s: %s", method, resp.Error)
		}
		return resp.Result
	}
}

// tool calls a tool and returns its structured content, failing on isError.
func (c *stdioClient) tool(b *testing.B, name string, args map[string]any) map[string]any {
	b.Helper()
	var r struct {
		IsError           bool           `json:"isError"`
		StructuredContent map[string]any `json:"structuredContent"`
		Content           []struct{ Text string }
	}
	json.Unmarshal(c.rpc(b, "tools/call", map[string]any{"name": name, "arguments": args}), &r)
	if r.IsError {
		b.Fatalf("%s: %v", name, r.Content)
	}
	return r.StructuredContent
}

// BenchmarkSessionRoundTrip: run_code of `1+1` through MCP stdio, per
// engine: in a warm session ("session"), against a fresh `python3 -c`
// in the same box ("baseline", fresh: true), and the start of a session's
// interpreter ("start", reset: true on every call), interleaved. Targets: a warm call on
// the jail at most 5 ms p50; well under the fresh process on qemu/TCG.
func BenchmarkSessionRoundTrip(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	engines := []struct {
		name string
		eng  func() sandbox.Engine
	}{
		{"jail", func() sandbox.Engine { return jail.New(jail.Config{Home: home}) }},
		{"qemu", func() sandbox.Engine { return qemu.New(qemu.Config{Home: home, DieWithParent: true}) }},
	}
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			eng := e.eng()
			a := eng.Available(context.Background())
			if !a.Usable {
				b.Skipf("%s unusable: %s", e.name, a.Reason)
			}
			bench.Env("engine "+e.name, a.Reason)
			if img, err := image.Locate(home, "default"); e.name == "qemu" && (err != nil || img.Manifest.Kernel == nil) {
				b.Skip("no VM image")
			}
			st, err := persist.Open(context.Background(), filepath.Join(home, "bench-"+e.name+".db"))
			if err != nil {
				b.Fatal(err)
			}
			m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}})
			if err != nil {
				b.Fatal(err)
			}
			srv, err := NewMCPServer(Config{Manager: m})
			if err != nil {
				b.Fatal(err)
			}
			c := newStdioClient(b, srv)
			box := c.tool(b, "create_box", map[string]any{"engine": e.name})["id"].(string)
			b.Cleanup(func() {
				m.Destroy(context.Background(), LocalOwner, box)
				m.Close()
				st.Close()
			})
			c.tool(b, "run_code", map[string]any{"box": box, "code": "1+1"}) // start the session
			rounds := 15
			if e.name == "qemu" {
				rounds = 5 // TCG: a fresh python3 takes seconds
			}
			run := func(args map[string]any) func(*testing.B) time.Duration {
				return bench.Timed(func(b *testing.B) {
					if out := c.tool(b, "run_code", args); out["exit_code"].(float64) != 0 {
						b.Fatalf("%v", out)
					}
				})
			}
			bench.Compare(b, rounds,
				bench.Case{Name: "baseline", Op: run(map[string]any{"box": box, "code": "print(1+1)", "fresh": true})},
				bench.Case{Name: "session", Op: run(map[string]any{"box": box, "code": "1+1"})},
				bench.Case{Name: "start", Op: run(map[string]any{"box": box, "code": "1+1", "reset": true})})
		})
	}
}
