package transport

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// A graceful shutdown lets a call in flight finish and ends the standing
// GET /mcp stream at once, instead of waiting out its whole grace for a
// stream that never ends by itself (a restarted server was unreachable
// for the 10 s default).
func TestShutdownEndsStandingStreamsAndKeepsCalls(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	served := make(chan error, 1)
	mcpSrv := newTestMCP(t)
	started := make(chan struct{})
	mcpSrv.AddTool(mcp.NewTool("block"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		close(started)
		time.Sleep(time.Second) // finishes after the shutdown began, whatever it is told
		return mcp.NewToolResultText("slept"), nil
	})
	cfg := HTTPConfig{MCP: mcpSrv, Tokens: testTokens, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	go func() { served <- ServeHTTP(ctx, cfg, time.Hour, func(a string) { addr <- a }) }()
	base := "http://" + <-addr

	id := initialize(t, base, aliceToken)
	hdr := map[string]string{server.HeaderKeySessionID: id}
	// The standing stream, on a client that never gives up on it.
	req, _ := http.NewRequest("GET", base+"/mcp", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	req.Header.Set(server.HeaderKeySessionID, id)
	get, err := (&http.Client{}).Do(req)
	if err != nil || get.StatusCode != http.StatusOK {
		t.Fatalf("GET /mcp: %v %v", get, err)
	}
	defer get.Body.Close()
	slow := make(chan reply, 1)
	go func() {
		slow <- do(t, "POST", base+"/mcp", aliceToken, hdr, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"block","arguments":{}}}`)
	}()
	<-started // the call is in flight
	cancel()

	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // the grace is an hour: returning at all is the point
		t.Fatal("shutdown waited on the standing GET /mcp stream")
	}
	if r := <-slow; r.status != http.StatusOK || !strings.Contains(r.body, "slept") {
		t.Fatalf("the call in flight at shutdown: %d %q (want its result)", r.status, r.body)
	}
}
