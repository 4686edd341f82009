package sandbox

import (
	"context"
	"errors"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// sessionGrace is how much longer than a session call's own timeout the
// host waits: the interpreter may have to start first (slow under
// emulation), and an interrupt that does not take gets a grace before the
// agent kills the interpreter.
const sessionGrace = 3 * time.Minute

// RunSession runs code in an interpreter session of the box (starting the
// box if it is stopped). The session lives in the box's agent: it keeps
// its state between calls and across server restarts, until the box
// stops. An exception, a timeout (which interrupts the code, keeping the
// session's state) and an interpreter's death are normal results.
func (m *Manager) RunSession(ctx context.Context, owner, ref string, req wire.SessionRequest, code string, sio client.SessionIO) (*wire.SessionResult, *Box, error) {
	ref, err := m.withDefaults(ctx, owner, ref, &req.Cwd, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	var res *wire.SessionResult
	agentVersion := ""
	b, err := m.withAgent(ctx, owner, ref, func(c *client.Client) error {
		if !c.SupportsSessions() {
			agentVersion = c.Hello().AgentVersion
			return errTooOld
		}
		limit := callTimeout + sessionGrace
		if req.TimeoutMs > 0 {
			limit = time.Duration(req.TimeoutMs)*time.Millisecond + sessionGrace
		}
		cctx, cancel := context.WithTimeoutCause(ctx, limit, errNoAnswer)
		defer cancel()
		var err error
		res, err = c.RunSession(cctx, req, code, sio)
		return noAnswer(ctx, cctx, err)
	})
	if errors.Is(err, errTooOld) {
		return nil, b, Errorf(ErrFailedPrecondition, "this box's guest agent (version %s) is too old for interpreter sessions; rebuild the image (boxlite-mcp image build) and restart the box, or run with fresh: true", agentVersion)
	}
	return res, b, err
}

var errTooOld = errors.New("guest agent too old for sessions")
