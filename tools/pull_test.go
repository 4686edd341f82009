package tools

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// slowPull stands for an image pull that reports bytes.
type slowPull struct{}

func (slowPull) Resolve(ctx context.Context, ref string, progress func(sandbox.ImageProgress)) (*sandbox.ResolvedImage, error) {
	for i := int64(1); i <= 4; i++ {
		if progress != nil {
			progress(sandbox.ImageProgress{Done: i << 20, Total: 4 << 20, Message: "downloading"})
		}
		time.Sleep(30 * time.Millisecond)
	}
	if progress != nil {
		progress(sandbox.ImageProgress{Message: "unpacking layer 1/1"})
	}
	time.Sleep(30 * time.Millisecond)
	return &sandbox.ResolvedImage{Name: "pulled"}, nil
}

type captureSession struct{ ch chan mcp.JSONRPCNotification }

func (c *captureSession) Initialize()                                         {}
func (c *captureSession) Initialized() bool                                   { return true }
func (c *captureSession) NotificationChannel() chan<- mcp.JSONRPCNotification { return c.ch }
func (c *captureSession) SessionID() string                                   { return "test" }

// TestCreateBoxPullProgress: a create_box that pulls sends progress
// notifications with the bytes done and the total, then keeps counting
// up (never down) while the box starts.
func TestCreateBoxPullProgress(t *testing.T) {
	home := t.TempDir()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := enginetest.NewWorld()
	t.Cleanup(w.KillAll)
	w.StartDelay = 100 * time.Millisecond
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: w}}, Images: slowPull{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	srv, err := NewMCPServer(Config{Manager: m, ProgressEvery: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sess := &captureSession{ch: make(chan mcp.JSONRPCNotification, 1000)}
	ctx := srv.WithContext(context.Background(), sess)
	msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": "create_box", "arguments": map[string]any{"image": "registry.example/x:1"}, "_meta": map[string]any{"progressToken": "p1"}}})
	resp := srv.HandleMessage(ctx, msg)
	r := resp.(mcp.JSONRPCResponse).Result.(*mcp.CallToolResult)
	if r.IsError || r.StructuredContent.(BoxOut).Image != "pulled" {
		t.Fatalf("create_box: %+v", r)
	}
	close(sess.ch)
	var last float64
	sawBytes, sawAfter := false, false
	for n := range sess.ch {
		p := n.Params.AdditionalFields
		v, _ := p["progress"].(float64)
		if v <= last {
			t.Errorf("progress went from %v to %v", last, v)
		}
		last = v
		if tot, ok := p["total"].(float64); ok {
			sawBytes = tot == 4<<20 && v <= tot && strings.Contains(p["message"].(string), "pulling")
		} else if sawBytes {
			sawAfter = true
		}
	}
	if !sawBytes || !sawAfter {
		t.Errorf("notifications: bytes %v, after the pull %v", sawBytes, sawAfter)
	}
}

// TestRunCodeMissingInterpreter: a fresh run whose interpreter the box
// lacks says which one; a missing working directory is not mistaken for it.
func TestRunCodeMissingInterpreter(t *testing.T) {
	srv, box := boxServer(t, Config{})
	_, r := callTool(t, srv, "run_code", map[string]any{"box": box, "code": "print(1)", "language": "python", "fresh": true,
		"env": map[string]any{"PATH": "/nonexistent"}})
	if !r.IsError || !strings.Contains(textOf(r), "has no python3") {
		t.Errorf("missing python3: %s", textOf(r))
	}
	_, r = callTool(t, srv, "run_code", map[string]any{"box": box, "code": "echo hi", "language": "bash", "cwd": "/nonexistent-dir"})
	if !r.IsError || strings.Contains(textOf(r), "has no") {
		t.Errorf("missing cwd: %s", textOf(r))
	}
}
