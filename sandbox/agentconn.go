package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
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
