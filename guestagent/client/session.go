package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// ErrNoSessions means the agent predates interpreter sessions.
var ErrNoSessions = errors.New("guest agent too old for sessions")

// sessionCancelGrace is how long a cancelled session call waits for the
// agent's result: the agent interrupts the code and, when that does not
// take within its grace, kills the interpreter.
const sessionCancelGrace = 15 * time.Second

// SessionIO receives a session call's output. Nil fields discard.
type SessionIO struct {
	Stdout io.Writer
	Stderr io.Writer
	// Output receives each rich output (already within the wire limits).
	Output func(h wire.OutputHeader, data []byte)
}

// SupportsSessions reports whether the agent runs interpreter sessions.
func (c *Client) SupportsSessions() bool {
	return c.hello.Minor >= 1 && c.hello.Has(wire.CapSession)
}

// RunSession runs code in an interpreter session of the box. An exception
// in the code is a normal result (Error set). Cancelling ctx interrupts
// the code, whose session keeps its state; RunSession then returns the
// result (Cancelled set) with ctx's error, or only the error if the agent
// did not answer in time.
func (c *Client) RunSession(ctx context.Context, req wire.SessionRequest, code string, sio SessionIO) (*wire.SessionResult, error) {
	if !c.SupportsSessions() {
		return nil, fmt.Errorf("%w: this box's guest agent (version %s) does not run interpreter sessions; rebuild the image with this boxlite-mcp (boxlite-mcp image build) and restart the box, or run with fresh: true",
			ErrNoSessions, c.hello.AgentVersion)
	}
	req.CodeBytes = int64(len(code))
	if c.hello.Minor < wire.MinorSessionDefaults {
		// The agent ignores the box's defaults: give them as the call's own
		// (applied before every call, as that agent always did).
		if req.Cwd == "" {
			req.Cwd = req.StartCwd
		}
		req.Env = append(append([]string{}, req.StartEnv...), req.Env...)
		req.StartCwd, req.StartEnv = "", nil
	}
	var (
		pending *wire.OutputHeader
		data    []byte
	)
	res, err := c.streamCall(ctx, streamed{req: &wire.Request{Op: wire.OpSession, Session: &req}, what: "session", grace: sessionCancelGrace,
		in: strings.NewReader(code), inFrame: wire.FrameData, stdout: sio.Stdout, stderr: sio.Stderr,
		other: func(f wire.Frame) error {
			switch f.Type {
			case wire.FrameOutput:
				if pending != nil {
					return fmt.Errorf("%w: output frame inside an output", wire.ErrBadFrame)
				}
				var h wire.OutputHeader
				if err := wire.DecodeJSON(f, wire.FrameOutput, &h); err != nil {
					return err
				}
				if err := h.Validate(); err != nil {
					return err
				}
				pending, data = &h, make([]byte, 0, h.Size)
			case wire.FrameData:
				if pending == nil || int64(len(data)+len(f.Payload)) > pending.Size {
					return fmt.Errorf("%w: output data beyond its header", wire.ErrBadFrame)
				}
				data = append(data, f.Payload...)
			default:
				return fmt.Errorf("%w: unexpected %s frame during a session call", wire.ErrBadFrame, f.Type)
			}
			if pending != nil && int64(len(data)) == pending.Size {
				if sio.Output != nil {
					sio.Output(*pending, data)
				}
				pending, data = nil, nil
			}
			return nil
		}})
	var out *wire.SessionResult
	if res != nil {
		out = res.Session
	}
	if out != nil && pending != nil {
		return nil, fmt.Errorf("%w: result inside an output", wire.ErrBadFrame)
	}
	return finish(ctx, out, err, "session")
}
