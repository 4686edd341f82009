package tools

// create_box's progress: an image pull reports bytes (progress/total, as
// MCP progress notifications expect), then the start reports its phase.
// The progress value only grows: after the bytes it counts on by one per
// notification.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// createProgress follows one create_box call.
type createProgress struct {
	mu      sync.Mutex
	p       sandbox.ImageProgress
	changed bool
	pulled  bool
}

func (c *createProgress) update(p sandbox.ImageProgress) {
	c.mu.Lock()
	c.p, c.changed, c.pulled = p, true, true
	c.mu.Unlock()
}

// withCreateProgress runs fn, giving it the pull callback, and sends
// progress notifications when the client asked for them.
func (s *Server) withCreateProgress(ctx context.Context, req mcp.CallToolRequest, fn func(pull func(sandbox.ImageProgress)) error) error {
	srv := server.ServerFromContext(ctx)
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil || srv == nil {
		return fn(nil)
	}
	token := req.Params.Meta.ProgressToken
	cp := &createProgress{}
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	sent := false
	go func() {
		defer close(finished)
		t := time.NewTicker(max(s.cfg.ProgressEvery/4, 10*time.Millisecond))
		defer t.Stop()
		var last float64
		lastSent := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cp.mu.Lock()
			p, changed, pulled := cp.p, cp.changed, cp.pulled
			cp.changed = false
			cp.mu.Unlock()
			params := map[string]any{"progressToken": token}
			switch {
			case changed && p.Total > 0 && float64(p.Done) > last:
				last = float64(p.Done)
				params["total"] = float64(p.Total)
				params["message"] = "pulling the image: " + p.Message
			case time.Since(lastSent) >= s.cfg.ProgressEvery || (changed && p.Total == 0):
				last++
				msg := fmt.Sprintf("starting the box %.0fs", time.Since(start).Seconds())
				if pulled {
					msg = "image: " + p.Message + "; " + msg
				}
				params["message"] = msg
			default:
				continue
			}
			params["progress"] = last
			lastSent = time.Now()
			if err := srv.SendNotificationToClient(ctx, "notifications/progress", params); err == nil {
				sent = true
			}
		}
	}()
	err := fn(cp.update)
	close(done)
	<-finished
	if sent {
		notificationsSettle()
	}
	return err
}

// interpreterMissing turns a fresh run_code that failed because its
// interpreter is not in the box into a result that says so. A failed
// lookup is told apart from a missing working directory by asking the
// box for the interpreter alone, with the run's environment (its PATH),
// from / where no working directory can be missing.
func (s *Server) interpreterMissing(ctx context.Context, box, prog string, env []string, err error) *mcp.CallToolResult {
	if !errors.Is(err, sandbox.ErrNotInBox) {
		return nil
	}
	root := uint32(0)
	_, b, perr := s.m.Exec(ctx, Owner(ctx), box, sandbox.ExecRequest{Argv: []string{prog, "--version"}, Env: env, Cwd: "/", UID: &root, GID: &root, TimeoutMs: 10_000, OutputLimit: 1024}, sandbox.ExecIO{})
	if !errors.Is(perr, sandbox.ErrNotInBox) {
		return nil
	}
	img := ""
	if b != nil {
		img = fmt.Sprintf(" (image %s)", b.Image)
	}
	return errorResult(fmt.Sprintf("this box%s has no %s, which run_code needs for this language; run what the image has with exec_command, install %s in the box, or create a box from an image that has it",
		img, prog, prog))
}
