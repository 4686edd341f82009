package tools

import (
	"context"
	"io"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Manager is what the tools need of the box manager. *sandbox.Manager
// implements it; the tools' own tests put a fake here (an interface this
// package owns, so the fake sits at our boundary, not at mcp-go's or the
// agent's). Implementations are safe for concurrent use; every error wraps
// one of sandbox's error classes (sandbox/errs.go).
type Manager interface {
	// Create records and starts a box of owner.
	Create(ctx context.Context, owner string, req sandbox.CreateRequest) (*sandbox.Box, error)
	// Get finds owner's box by id, name or unique id prefix.
	Get(ctx context.Context, owner, ref string) (*sandbox.Box, error)
	// List returns owner's boxes, those in status only unless it is "".
	List(ctx context.Context, owner string, status sandbox.Status) ([]*sandbox.Box, error)
	// Destroy stops a box and removes everything it has.
	Destroy(ctx context.Context, owner, ref string) (*sandbox.Box, error)
	// Exec runs a program in a box, starting it if stopped.
	Exec(ctx context.Context, owner, ref string, req sandbox.ExecRequest, eio sandbox.ExecIO) (*sandbox.ExecResult, *sandbox.Box, error)
	// WriteFile writes r to a file in a box.
	WriteFile(ctx context.Context, owner, ref string, req sandbox.WriteFileRequest, r io.Reader) (*sandbox.FileResult, *sandbox.Box, error)
	// ReadFile copies a file of a box into w.
	ReadFile(ctx context.Context, owner, ref string, req sandbox.ReadFileRequest, w io.Writer) (*sandbox.FileResult, *sandbox.Box, error)
	// RunSession runs code in an interpreter session of a box.
	RunSession(ctx context.Context, owner, ref string, req sandbox.SessionRequest, code string, sio sandbox.SessionIO) (*sandbox.SessionResult, *sandbox.Box, error)
	// NetworkStatus reports a running box's network (nil when it has none
	// or it does not answer); it never starts a box.
	NetworkStatus(ctx context.Context, b *sandbox.Box, since time.Time) *sandbox.NetworkState
	// SnapshotBox records a snapshot of a box (files; memory where the
	// engine can).
	SnapshotBox(ctx context.Context, owner, ref, name string) (*sandbox.Snapshot, error)
	// ListSnapshots lists the owner's snapshots.
	ListSnapshots(ctx context.Context, owner string) ([]*sandbox.Snapshot, error)
	// DeleteSnapshot deletes a snapshot no box depends on.
	DeleteSnapshot(ctx context.Context, owner, ref string) (*sandbox.Snapshot, error)
}

var _ Manager = (*sandbox.Manager)(nil)
