package tools

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

func invalid(format string, args ...any) *mcp.CallToolResult {
	return errorResult(fmt.Sprintf(format, args...))
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (s *Server) createBox(ctx context.Context, req mcp.CallToolRequest, in CreateBoxIn) (*mcp.CallToolResult, error) {
	if in.Engine != "" && !contains(Engines, in.Engine) {
		return invalid("engine must be one of %s (got %q)", strings.Join(Engines, ", "), in.Engine), nil
	}
	if in.TTLSeconds < 0 || in.TTLSeconds > MaxTTLSeconds || in.IdleTimeoutSeconds < 0 || in.IdleTimeoutSeconds > MaxTTLSeconds {
		return invalid("ttl_seconds and idle_timeout_seconds must be between 0 and %d", MaxTTLSeconds), nil
	}
	if bad := checkEnv(in.Env); bad != nil {
		return bad, nil
	}
	var b *sandbox.Box
	err := s.withCreateProgress(ctx, req, func(pull func(sandbox.ImageProgress)) error {
		var err error
		b, err = s.m.Create(ctx, Owner(ctx), sandbox.CreateRequest{
			Name: in.Name, Image: in.Image, Engine: in.Engine, CPUs: in.CPUs, MemoryMiB: in.MemoryMiB, DiskMiB: in.DiskMiB,
			Network: in.Network, NetworkAllow: in.NetworkAllow, Env: in.Env, TTL: time.Duration(in.TTLSeconds) * time.Second,
			IdleTimeout: time.Duration(in.IdleTimeoutSeconds) * time.Second, Progress: pull, FromSnapshot: in.FromSnapshot,
		})
		return err
	})
	if err != nil {
		return s.toolError(ctx, "create_box", err), nil
	}
	out := BoxOut{ID: b.ID, Name: b.Name, Status: string(b.Status), Engine: b.Engine, Image: b.Image, CreatedAt: rfc3339(b.CreatedAt)}
	ref := b.ID
	if b.Name != "" {
		ref = fmt.Sprintf("%s (name %q)", b.ID, b.Name)
	}
	text := fmt.Sprintf("Box %s is %s on the %s engine (image %s, %d CPU, %d MiB). Use box=%q with run_code.",
		ref, b.Status, b.Engine, b.Image, b.Spec.CPUs, b.Spec.MemoryMiB, firstNonEmpty(b.Name, b.ID))
	return mcp.NewToolResultStructured(out, text), nil
}

// withProgress runs fn; when the client sent a progress token it sends a
// progress notification every ProgressEvery with the elapsed time and the
// latest message fn set.
func (s *Server) withProgress(ctx context.Context, req mcp.CallToolRequest, what string, fn func(setMsg func(string)) error) error {
	var mu sync.Mutex
	msg := ""
	setMsg := func(m string) { mu.Lock(); msg = m; mu.Unlock() }
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil {
		return fn(setMsg)
	}
	srv := server.ServerFromContext(ctx)
	if srv == nil {
		return fn(setMsg)
	}
	token := req.Params.Meta.ProgressToken
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	sent := false
	go func() {
		defer close(finished)
		t := time.NewTicker(s.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				el := time.Since(start)
				mu.Lock()
				m := fmt.Sprintf("%s %.0fs", what, el.Seconds())
				if msg != "" {
					m += ": " + msg
				}
				mu.Unlock()
				if err := srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
					"progressToken": token, "progress": el.Seconds(), "message": m,
				}); err == nil {
					sent = true
				}
			}
		}
	}()
	err := fn(setMsg)
	close(done)
	<-finished
	if sent {
		notificationsSettle()
	}
	return err
}

func (s *Server) writeFile(ctx context.Context, req mcp.CallToolRequest, in WriteFileIn) (*mcp.CallToolResult, error) {
	if hasNUL(in.Path) {
		return invalid("path contains a NUL byte, which a path cannot hold"), nil
	}
	if !path.IsAbs(in.Path) {
		return invalid("path must be absolute (got %q)", in.Path), nil
	}
	var data []byte
	switch in.Encoding {
	case "", "text":
		data = []byte(in.Content)
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return invalid("content is not valid base64: %v", err), nil
		}
	default:
		return invalid("encoding must be text or base64 (got %q)", in.Encoding), nil
	}
	if len(data) > MaxWriteBytes {
		return invalid("content is %d bytes; the limit is %d bytes", len(data), MaxWriteBytes), nil
	}
	mode := fs.FileMode(0o644)
	if in.Mode != "" {
		v, err := strconv.ParseUint(in.Mode, 8, 32)
		if err != nil || v > 0o7777 {
			return invalid("mode must be octal permission bits like 0644 (got %q)", in.Mode), nil
		}
		mode = fs.FileMode(v)
	}
	res, _, err := s.m.WriteFile(ctx, Owner(ctx), in.Box, sandbox.WriteFileRequest{Path: in.Path, Mode: mode, Size: int64(len(data))}, bytes.NewReader(data))
	if err != nil {
		return s.toolError(ctx, "write_file", err), nil
	}
	out := WriteFileOut{Path: path.Clean(in.Path), Bytes: res.Bytes}
	return mcp.NewToolResultStructured(out, fmt.Sprintf("wrote %d bytes to %s", out.Bytes, out.Path)), nil
}

func (s *Server) readFile(ctx context.Context, req mcp.CallToolRequest, in ReadFileIn) (*mcp.CallToolResult, error) {
	if hasNUL(in.Path) {
		return invalid("path contains a NUL byte, which a path cannot hold"), nil
	}
	if !path.IsAbs(in.Path) {
		return invalid("path must be absolute (got %q)", in.Path), nil
	}
	limit := in.MaxBytes
	if limit == 0 {
		limit = DefaultReadBytes
	}
	if limit < 1 || limit > MaxReadBytes {
		return invalid("max_bytes must be between 1 and %d (got %d)", MaxReadBytes, in.MaxBytes), nil
	}
	buf := limitBuffer{limit: int(limit)}
	res, _, err := s.m.ReadFile(ctx, Owner(ctx), in.Box, sandbox.ReadFileRequest{Path: in.Path, MaxBytes: limit}, &buf)
	if err != nil {
		return s.toolError(ctx, "read_file", err), nil
	}
	data, truncated := buf.Bytes(), res.Truncated || buf.over
	if truncated {
		data = []byte(trimPartial(string(data)))
	}
	return readResult(path.Clean(in.Path), data, truncated), nil
}

// readResult builds read_file's result: the content once in
// structuredContent (within dataBudget), repeated in the text up to
// textBudget, and as an image block when that fits the budget too.
func readResult(p string, data []byte, truncated bool) *mcp.CallToolResult {
	out := ReadFileOut{Path: p}
	mime := http.DetectContentType(data)
	isImage := mime == "image/png" || mime == "image/jpeg" || mime == "image/gif"
	var n int
	if utf8.Valid(data) && bytes.IndexByte(data, 0) < 0 && !isImage {
		n, _ = fit(string(data), dataBudget)
		out.Encoding, out.Content = "text", string(data[:n])
	} else {
		n = min(len(data), dataBudget/4*3) // base64 costs 4 bytes per 3
		out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(data[:n])
	}
	out.Size, out.Truncated = int64(n), truncated || n < len(data)
	text := fmt.Sprintf("%s: %d bytes", out.Path, out.Size)
	if out.Truncated {
		text += " (truncated; the file is longer)"
	}
	attach := isImage && !out.Truncated && 2*len(out.Content) <= dataBudget
	switch {
	case out.Encoding == "text":
		if n, _ := fit(out.Content, textBudget); n < len(out.Content) {
			text += fmt.Sprintf("; too long to repeat here: below are its first %d bytes, the structured result's content holds all of them\n%s", n, out.Content[:n])
		} else {
			text += "\n" + out.Content
		}
	case isImage && !attach:
		text += fmt.Sprintf(", %s, returned as base64 (too large to attach as an image too)", mime)
	default:
		text += fmt.Sprintf(", %s, returned as base64", mime)
	}
	r := mcp.NewToolResultStructured(out, text)
	if attach {
		r.Content = append(r.Content, mcp.NewImageContent(out.Content, mime))
	}
	return r
}

// limitBuffer keeps the first limit bytes written to it and notes the rest.
type limitBuffer struct {
	bytes.Buffer
	limit int
	over  bool
}

func (b *limitBuffer) Write(p []byte) (int, error) {
	keep := min(len(p), max(b.limit-b.Len(), 0))
	b.over = b.over || keep < len(p)
	b.Buffer.Write(p[:keep])
	return len(p), nil
}

func (s *Server) listBoxes(ctx context.Context, req mcp.CallToolRequest, in ListBoxesIn) (*mcp.CallToolResult, error) {
	boxes, err := s.m.List(ctx, Owner(ctx), sandbox.Status(in.Status))
	if err != nil {
		return s.toolError(ctx, "list_boxes", err), nil
	}
	out := ListBoxesOut{Boxes: []BoxSummary{}}
	var b strings.Builder
	for _, x := range boxes {
		net := s.networkOut(ctx, x)
		out.Boxes = append(out.Boxes, BoxSummary{ID: x.ID, Name: x.Name, Status: string(x.Status), Engine: x.Engine, Image: x.Image,
			CreatedAt: rfc3339(x.CreatedAt), LastUsedAt: rfc3339(x.LastUsedAt), Network: net})
		name := x.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(&b, "%s  %-20s %-10s %-5s %s  %s", x.ID, name, x.Status, x.Engine, x.Image, renderNetwork(net))
		if x.StatusReason != "" {
			fmt.Fprintf(&b, "  (%s)", clipLine(x.StatusReason))
		}
		b.WriteString("\n")
	}
	if len(boxes) == 0 {
		b.WriteString("no boxes; create one with create_box\n")
	}
	return mcp.NewToolResultStructured(out, b.String()), nil
}

func (s *Server) destroyBox(ctx context.Context, req mcp.CallToolRequest, in DestroyBoxIn) (*mcp.CallToolResult, error) {
	b, err := s.m.Destroy(ctx, Owner(ctx), in.Box)
	if err != nil {
		return s.toolError(ctx, "destroy_box", err), nil
	}
	out := DestroyBoxOut{ID: b.ID, Destroyed: true}
	return mcp.NewToolResultStructured(out, fmt.Sprintf("destroyed box %s", b.ID)), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
