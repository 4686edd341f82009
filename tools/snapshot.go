package tools

import (
	"context"
	"fmt"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// The snapshot tools' input and output types (the public contract, like
// types.go) and their handlers.

// SnapshotBoxIn is snapshot_box's input.
type SnapshotBoxIn struct {
	Box  string `json:"box" jsonschema:"Box id, name or unique id prefix (the box must be running; it keeps running)"`
	Name string `json:"name,omitempty" jsonschema:"Optional name, unique among your snapshots; usable wherever a snapshot is asked for"`
}

// SnapshotOut describes a snapshot.
type SnapshotOut struct {
	Snapshot       string `json:"snapshot" jsonschema:"Snapshot id (a lower-case ULID)"`
	Name           string `json:"name" jsonschema:"Snapshot name, empty when unnamed"`
	Box            string `json:"box" jsonschema:"Id of the box it was taken of (that box may be gone since)"`
	Engine         string `json:"engine" jsonschema:"Engine of the box; boxes made from the snapshot run on it too"`
	Image          string `json:"image" jsonschema:"Guest image of the box"`
	IncludesMemory bool   `json:"includes_memory" jsonschema:"The snapshot holds the running memory too (VM engines): processes and interpreter sessions continue in boxes made from it. Otherwise files only"`
	Bytes          int64  `json:"bytes" jsonschema:"Disk space the snapshot takes on the server"`
	CreatedAt      string `json:"created_at" jsonschema:"Creation time, RFC 3339"`
}

// ListSnapshotsIn is list_snapshots' input (no arguments).
type ListSnapshotsIn struct{}

// ListSnapshotsOut is list_snapshots' result.
type ListSnapshotsOut struct {
	Snapshots []SnapshotOut `json:"snapshots" jsonschema:"Your snapshots, oldest first"`
}

// DeleteSnapshotIn is delete_snapshot's input.
type DeleteSnapshotIn struct {
	Snapshot string `json:"snapshot" jsonschema:"Snapshot id, name or unique id prefix"`
}

// DeleteSnapshotOut is delete_snapshot's result.
type DeleteSnapshotOut struct {
	Snapshot string `json:"snapshot" jsonschema:"Id of the deleted snapshot"`
	Deleted  bool   `json:"deleted" jsonschema:"Always true on success"`
}

func snapshotOut(sn *sandbox.Snapshot) SnapshotOut {
	return SnapshotOut{Snapshot: sn.ID, Name: sn.Name, Box: sn.BoxID, Engine: sn.Engine, Image: sn.Image,
		IncludesMemory: sn.IncludesMemory, Bytes: sn.Bytes, CreatedAt: rfc3339(sn.CreatedAt)}
}

func (s *Server) snapshotBox(ctx context.Context, req mcp.CallToolRequest, in SnapshotBoxIn) (*mcp.CallToolResult, error) {
	var sn *sandbox.Snapshot
	err := s.withProgress(ctx, req, "snapshot", func(func(string)) error {
		var err error
		sn, err = s.m.SnapshotBox(ctx, Owner(ctx), in.Box, in.Name)
		return err
	})
	if err != nil {
		return s.toolError(ctx, "snapshot_box", err), nil
	}
	what := "files only"
	if sn.IncludesMemory {
		what = "files and memory"
	}
	text := fmt.Sprintf("Snapshot %s of box %s (%s, %s). Use create_box with from_snapshot=%q to make boxes from it.",
		firstNonEmpty(sn.Name, sn.ID), sn.BoxID, what, humanBytes(sn.Bytes), firstNonEmpty(sn.Name, sn.ID))
	return mcp.NewToolResultStructured(snapshotOut(sn), text), nil
}

func (s *Server) listSnapshots(ctx context.Context, req mcp.CallToolRequest, in ListSnapshotsIn) (*mcp.CallToolResult, error) {
	list, err := s.m.ListSnapshots(ctx, Owner(ctx))
	if err != nil {
		return s.toolError(ctx, "list_snapshots", err), nil
	}
	out := ListSnapshotsOut{Snapshots: []SnapshotOut{}}
	var b strings.Builder
	for _, sn := range list {
		out.Snapshots = append(out.Snapshots, snapshotOut(sn))
		mem := "files"
		if sn.IncludesMemory {
			mem = "files+memory"
		}
		fmt.Fprintf(&b, "%s  %-20s box %s  %-5s %s  %s  %s\n", sn.ID, firstNonEmpty(sn.Name, "-"), sn.BoxID, sn.Engine, sn.Image, mem, humanBytes(sn.Bytes))
	}
	if len(list) == 0 {
		b.WriteString("no snapshots; take one with snapshot_box\n")
	}
	return mcp.NewToolResultStructured(out, b.String()), nil
}

func (s *Server) deleteSnapshot(ctx context.Context, req mcp.CallToolRequest, in DeleteSnapshotIn) (*mcp.CallToolResult, error) {
	sn, err := s.m.DeleteSnapshot(ctx, Owner(ctx), in.Snapshot)
	if err != nil {
		return s.toolError(ctx, "delete_snapshot", err), nil
	}
	return mcp.NewToolResultStructured(DeleteSnapshotOut{Snapshot: sn.ID, Deleted: true}, fmt.Sprintf("deleted snapshot %s", sn.ID)), nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", (n+1023)/1024)
}
