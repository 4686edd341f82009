package tools

import (
	"context"
	"encoding/json"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// fakeManager is a fake at the Manager interface (which this package owns):
// the tests of the tool layer's own logic (error mapping, progress) use it
// where a real manager could not produce the case on demand. Every call
// fails with err when it is set (after running beforeFail, when set: a test
// cancels the call's context there); otherwise Create, Exec and RunSession
// run the hooks when set, and the rest return a running box.
type fakeManager struct {
	err        error
	beforeFail func()
	create     func(ctx context.Context, req sandbox.CreateRequest) error
	exec       func(ctx context.Context, req sandbox.ExecRequest, eio sandbox.ExecIO) (*sandbox.ExecResult, error)
	session    func(ctx context.Context, req sandbox.SessionRequest, sio sandbox.SessionIO) (*sandbox.SessionResult, error)
	// network, when set, is every box's network status; gets counts Get.
	network *sandbox.NetworkState
	gets    atomic.Int32
}

var _ Manager = (*fakeManager)(nil)

// fail returns the error every call fails with, nil for none.
func (f *fakeManager) fail() error {
	if f.err != nil && f.beforeFail != nil {
		f.beforeFail()
	}
	return f.err
}

func fakeBox() *sandbox.Box {
	return &sandbox.Box{ID: "01kfakebox0000000000000000", Owner: LocalOwner, Engine: "jail", Image: "default", Status: sandbox.StatusRunning,
		Spec: sandbox.Spec{CPUs: 1, MemoryMiB: 512}, CreatedAt: time.Unix(1, 0), LastUsedAt: time.Unix(1, 0)}
}

func (f *fakeManager) Create(ctx context.Context, owner string, req sandbox.CreateRequest) (*sandbox.Box, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	if f.create != nil {
		if err := f.create(ctx, req); err != nil {
			return nil, err
		}
	}
	return fakeBox(), nil
}

func (f *fakeManager) Get(ctx context.Context, owner, ref string) (*sandbox.Box, error) {
	f.gets.Add(1)
	return fakeBox(), f.fail()
}

func (f *fakeManager) List(ctx context.Context, owner string, status sandbox.Status) ([]*sandbox.Box, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return []*sandbox.Box{fakeBox()}, nil
}

func (f *fakeManager) Destroy(ctx context.Context, owner, ref string) (*sandbox.Box, error) {
	return fakeBox(), f.fail()
}

func (f *fakeManager) Exec(ctx context.Context, owner, ref string, req sandbox.ExecRequest, eio sandbox.ExecIO) (*sandbox.ExecResult, *sandbox.Box, error) {
	if err := f.fail(); err != nil {
		return nil, fakeBox(), err
	}
	if f.exec != nil {
		res, err := f.exec(ctx, req, eio)
		return res, fakeBox(), err
	}
	return &sandbox.ExecResult{}, fakeBox(), nil
}

func (f *fakeManager) WriteFile(ctx context.Context, owner, ref string, req sandbox.WriteFileRequest, r io.Reader) (*sandbox.FileResult, *sandbox.Box, error) {
	if err := f.fail(); err != nil {
		return nil, fakeBox(), err
	}
	n, _ := io.Copy(io.Discard, r)
	return &sandbox.FileResult{Bytes: n}, fakeBox(), nil
}

func (f *fakeManager) ReadFile(ctx context.Context, owner, ref string, req sandbox.ReadFileRequest, w io.Writer) (*sandbox.FileResult, *sandbox.Box, error) {
	if err := f.fail(); err != nil {
		return nil, fakeBox(), err
	}
	n, _ := io.WriteString(w, "content")
	return &sandbox.FileResult{Bytes: int64(n)}, fakeBox(), nil
}

func (f *fakeManager) RunSession(ctx context.Context, owner, ref string, req sandbox.SessionRequest, code string, sio sandbox.SessionIO) (*sandbox.SessionResult, *sandbox.Box, error) {
	if err := f.fail(); err != nil {
		return nil, fakeBox(), err
	}
	if f.session != nil {
		res, err := f.session(ctx, req, sio)
		return res, fakeBox(), err
	}
	return &sandbox.SessionResult{}, fakeBox(), nil
}

func (f *fakeManager) NetworkStatus(ctx context.Context, b *sandbox.Box, since time.Time) *sandbox.NetworkState {
	if b == nil {
		panic("NetworkStatus without a box")
	}
	return f.network
}

func fakeSnapshot() *sandbox.Snapshot {
	return &sandbox.Snapshot{ID: "01kfakesnap000000000000000", Owner: LocalOwner, BoxID: fakeBox().ID, Engine: "jail", Image: "default",
		CreatedAt: time.Unix(1, 0)}
}

func (f *fakeManager) SnapshotBox(ctx context.Context, owner, ref, name string) (*sandbox.Snapshot, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return fakeSnapshot(), nil
}

func (f *fakeManager) ListSnapshots(ctx context.Context, owner string) ([]*sandbox.Snapshot, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return []*sandbox.Snapshot{fakeSnapshot()}, nil
}

func (f *fakeManager) DeleteSnapshot(ctx context.Context, owner, ref string) (*sandbox.Snapshot, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return fakeSnapshot(), nil
}

// fakeServer is the real MCP server with its tools on m.
func fakeServer(t *testing.T, m Manager, cfg Config) *server.MCPServer {
	t.Helper()
	cfg.Manager = m
	srv, err := NewMCPServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// callWith sends a tools/call through the server's message handler in
// ctx, with meta as the request's _meta, and returns the result.
func callWith(t *testing.T, ctx context.Context, srv *server.MCPServer, name string, args, meta map[string]any) *mcp.CallToolResult {
	t.Helper()
	params := map[string]any{"name": name, "arguments": args}
	if meta != nil {
		params["_meta"] = meta
	}
	msg, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})
	if err != nil {
		t.Fatal(err)
	}
	resp := srv.HandleMessage(ctx, msg)
	r, ok := resp.(mcp.JSONRPCResponse)
	if !ok {
		raw, _ := json.Marshal(resp)
		t.Fatalf("%s: not a result (a protocol error?): %.300s", name, raw)
	}
	return r.Result.(*mcp.CallToolResult)
}
