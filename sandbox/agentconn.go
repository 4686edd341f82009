package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// Dialer opens a connection to a box's agent.
type Dialer func(ctx context.Context) (net.Conn, error)

// WaitHello is what an engine's Start waits on: it dials the agent every
// retry until one hello succeeds, the box process exits (a value on
// exited), or ctx ends, whichever is first.
func WaitHello(ctx context.Context, dial Dialer, exited <-chan error, retry time.Duration, who string) error {
	done := make(chan error, 1)
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			conn, err := dial(hctx)
			if err == nil {
				c, herr := client.New(hctx, conn, who)
				if herr == nil {
					c.Close()
					done <- nil
					return
				}
			}
			select {
			case <-hctx.Done():
				done <- fmt.Errorf("no hello from the agent: %w", hctx.Err())
				return
			case <-time.After(retry):
			}
		}
	}()
	select {
	case err := <-done:
		return err
	case err := <-exited:
		if err == nil {
			err = errors.New("exit status 0")
		}
		return fmt.Errorf("the box process exited during start (%v)", err)
	case <-ctx.Done():
		return fmt.Errorf("no hello from the agent: %w", ctx.Err())
	}
}

// ShutdownAgent asks a box's agent to sync and power off, within grace. It
// is the graceful first step of every engine's Stop; failures are ignored
// (the engine's signals follow).
func ShutdownAgent(ctx context.Context, dial Dialer, grace time.Duration) {
	sctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	conn, err := dial(sctx)
	if err != nil {
		return
	}
	c, err := client.New(sctx, conn, "boxlite-mcp/stop")
	if err != nil {
		return
	}
	c.Shutdown(sctx, false)
	c.Close()
}

// StopProcess is the stop sequence of every engine for its box process p:
// the agent's shutdown and up to grace to exit; then nudge (the engine's own
// polite request, such as QMP quit; may be nil) and up to 5 s; then SIGKILL
// to the process group, which must take effect within 10 s.
func StopProcess(ctx context.Context, p proc.ID, dial Dialer, grace time.Duration, nudge func()) error {
	if p.Alive() && grace > 0 {
		ShutdownAgent(ctx, dial, grace)
		p.Wait(grace)
	}
	if p.Alive() && nudge != nil {
		nudge()
		p.Wait(5 * time.Second)
	}
	if !p.Alive() {
		return nil
	}
	if err := p.KillGroup(); err != nil {
		return fmt.Errorf("killing pid %d: %w", p.PID, err)
	}
	if !p.Wait(10 * time.Second) {
		return fmt.Errorf("pid %d survived SIGKILL", p.PID)
	}
	return nil
}
