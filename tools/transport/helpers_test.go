package transport

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/tools"
)

// Two tenants of the test servers.
const (
	aliceToken = "alice-token-0123456789abcdef"
	bobToken   = "bob-token-0123456789abcdefgh"
)

var testTokens = map[string]string{aliceToken: "alice", bobToken: "bob"}

// newTestMCP returns the real tool server over a manager whose only engine
// is an unusable fake (list_boxes works, no box can start), plus a "slow"
// tool that sleeps for its "ms" argument.
func newTestMCP(t *testing.T) *server.MCPServer {
	t.Helper()
	home := t.TempDir()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng := &enginetest.Fake{W: enginetest.NewWorld(), EngineName: "jail", Unusable: "transport tests: no boxes"}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	srv, err := tools.NewMCPServer(tools.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	srv.AddTool(mcp.NewTool("slow", mcp.WithNumber("ms")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		select {
		case <-time.After(time.Duration(req.GetFloat("ms", 0)) * time.Millisecond):
			return mcp.NewToolResultText("slept"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	return srv
}

// startServer runs the same server as ServeHTTP on a loopback port and
// returns its base URL and handler.
func startServer(t *testing.T, cfg HTTPConfig) (string, *Handler) {
	t.Helper()
	if cfg.MCP == nil {
		cfg.MCP = newTestMCP(t)
	}
	if cfg.Tokens == nil {
		cfg.Tokens = testTokens
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = l.Addr().String()
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, h, err := newServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		h.Close(context.Background())
		<-done
	})
	return "http://" + cfg.Listen, h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// reply is what a request got: a streaming 200 is not read (its body stays
// open in stream), anything else is read in full.
type reply struct {
	status  int
	ctype   string
	session string
	body    string
	stream  *http.Response
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func do(t *testing.T, method, url, token string, hdr map[string]string, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	r := reply{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), session: resp.Header.Get(server.HeaderKeySessionID)}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(r.ctype, "text/event-stream") && method == http.MethodGet {
		r.stream = resp
		t.Cleanup(func() { resp.Body.Close() })
		return r
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.body = string(b)
	return r
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// initialize opens a streamable HTTP session as token's owner.
func initialize(t *testing.T, base, token string) string {
	t.Helper()
	r := do(t, "POST", base+"/mcp", token, nil, initBody)
	if r.status != http.StatusOK || r.session == "" {
		t.Fatalf("initialize: %d %q", r.status, r.body)
	}
	id := r.session
	r = do(t, "POST", base+"/mcp", token, map[string]string{server.HeaderKeySessionID: id},
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("initialized: %d %q", r.status, r.body)
	}
	return id
}

// sseEvents opens GET /sse as token's owner and returns the message
// endpoint and a channel of the stream's data lines.
func sseEvents(t *testing.T, base, token string) (string, *http.Response, <-chan string) {
	t.Helper()
	r := do(t, "GET", base+"/sse", token, nil, "")
	if r.stream == nil {
		t.Fatalf("GET /sse: %d %q", r.status, r.body)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r.stream.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				lines <- strings.TrimSpace(d)
			}
		}
	}()
	select {
	case ep := <-lines:
		if !strings.HasPrefix(ep, "/message?sessionId=") {
			t.Fatalf("first SSE event %q", ep)
		}
		return base + ep, r.stream, lines
	case <-time.After(20 * time.Second):
		t.Fatal("no endpoint event")
	}
	return "", nil, nil
}

// waitData waits for a data line containing want.
func waitData(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q on the stream", want)
		}
	}
}

// eventually polls cond for up to 20 s (a bound for hung tests, not a timing claim).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never: %s", what)
}
