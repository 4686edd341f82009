package transport_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/tools"
)

// stdioServer builds boxlite-mcp and starts it on stdio with an MCP client.
func stdioServer(b *testing.B, home string) *mcpclient.Client {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "boxlite-mcp")
	build := exec.Command("go", "build", "-o", bin, "./cmd/boxlite-mcp")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	c, err := mcpclient.NewStdioMCPClient(bin, nil, "serve", "--home", home, "--engine", "jail", "--log-level", "error")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "bench", Version: "0"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		b.Fatal(err)
	}
	return c
}

func callTool(b *testing.B, c *mcpclient.Client, name string, args map[string]any) *mcp.CallToolResult {
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = name, args
	r, err := c.CallTool(context.Background(), req)
	if err != nil || r.IsError {
		b.Fatalf("%s: %v %+v", name, err, r)
	}
	return r
}

// BenchmarkMCPStdio measures MCP round trips over stdio against the same
// work done through the manager in this process (the baseline),
// interleaved.
// Targets: list_boxes p50 under 1 ms; run_code overhead under 2 ms.
func BenchmarkMCPStdio(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	ctx := context.Background()
	st, err := persist.Open(ctx, filepath.Join(home, "boxlite.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{jail.New(jail.Config{Home: home})}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	box, err := m.Create(ctx, tools.LocalOwner, sandbox.CreateRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Destroy(ctx, tools.LocalOwner, box.ID)
	c := stdioServer(b, home)

	bench.Env("engine jail", jail.New(jail.Config{Home: home}).Available(ctx).Reason)
	b.Run("list_boxes", func(b *testing.B) {
		bench.Compare(b, 15,
			bench.Case{Name: "baseline", Op: bench.Batch(20, func(b *testing.B) {
				if _, err := m.List(ctx, tools.LocalOwner, ""); err != nil {
					b.Fatal(err)
				}
			})},
			bench.Case{Name: "mcp-stdio", Op: bench.Batch(20, func(b *testing.B) {
				callTool(b, c, "list_boxes", map[string]any{})
			})})
	})
	req := sandbox.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}, Cwd: "/root"}
	b.Run("run_code", func(b *testing.B) {
		bench.Compare(b, 15,
			bench.Case{Name: "baseline", Op: bench.Timed(func(b *testing.B) {
				var out bytes.Buffer
				if _, _, err := m.Exec(ctx, tools.LocalOwner, "bench", req, sandbox.ExecIO{Stdout: &out}); err != nil || out.String() != "1\n" {
					b.Fatal(err)
				}
			})},
			bench.Case{Name: "mcp-stdio", Op: bench.Timed(func(b *testing.B) {
				callTool(b, c, "run_code", map[string]any{"box": "bench", "code": "print(1)", "fresh": true}) // a new python3 -c, as the baseline
			})})
	})
}
