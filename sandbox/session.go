package sandbox

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// sessionSilence is the host-side bound on a session call's silence. The
// agent sends a heartbeat every wire.SessionHeartbeat while a call runs or
// waits for its turn, so a box silent this long is frozen or gone, whatever
// the call's own timeout. A call never lasts longer than its timeout plus
// Config.SessionGrace (the interpreter may have to start first, slowly
// under emulation; an interrupt that does not take gets a grace before
// the agent kills the interpreter; the call may wait behind the session's
// earlier ones).
const sessionSilence = 6 * wire.SessionHeartbeat

// RunSession runs code in an interpreter session of the box (starting the
// box if it is stopped). The session lives in the box's agent: it keeps
// its state between calls and across server restarts, until the box
// stops. An exception, a timeout (which interrupts the code, keeping the
// session's state) and an interpreter's death are normal results.
func (m *Manager) RunSession(ctx context.Context, owner, ref string, req SessionRequest, code string, sio SessionIO) (*SessionResult, *Box, error) {
	// The box's defaults go as StartCwd/StartEnv: the agent gives them to a
	// new interpreter (and to a running one that has not had them), never
	// again before each call, so what the code changed persists. The
	// image's user goes as StartUID/StartGID: interpreters run as fresh
	// runs do.
	var startCwd string
	var startEnv []string
	var uid, gid *uint32
	r, err := m.withDefaults(ctx, owner, ref, &startCwd, &uid, &gid, &startEnv)
	if err != nil {
		return nil, nil, err
	}
	var res *wire.SessionResult
	agentVersion := ""
	b, err := m.withAgentOn(ctx, r, func(c *client.Client) error {
		if !c.SupportsSessions() {
			agentVersion = c.Hello().AgentVersion
			return errTooOld
		}
		limit := callTimeout + m.cfg.SessionGrace
		if req.TimeoutMs > 0 {
			limit = time.Duration(req.TimeoutMs)*time.Millisecond + m.cfg.SessionGrace
		}
		cctx, cancel := context.WithTimeoutCause(ctx, limit, errNoAnswer)
		defer cancel()
		var last atomic.Int64
		last.Store(time.Now().UnixNano())
		seen := func() { last.Store(time.Now().UnixNano()) }
		cio := sio.client()
		cio.Stdout, cio.Stderr = activity{cio.Stdout, seen}, activity{cio.Stderr, seen}
		if out := cio.Output; out != nil {
			cio.Output = func(h wire.OutputHeader, data []byte) { seen(); out(h, data) }
		}
		done := make(chan struct{})
		defer close(done)
		var silent atomic.Bool
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if time.Since(time.Unix(0, last.Load())) > sessionSilence {
						silent.Store(true)
						cancel()
						return
					}
				}
			}
		}()
		var err error
		wreq := req.wire()
		wreq.StartCwd, wreq.StartEnv, wreq.StartUID, wreq.StartGID = startCwd, startEnv, uid, gid
		res, err = c.RunSession(cctx, wreq, code, cio)
		if err != nil && ctx.Err() == nil && cctx.Err() != nil {
			return m.sessionLimitHit(req, res, err, silent.Load())
		}
		return err
	})
	if errors.Is(err, errTooOld) {
		return nil, b, Errorf(ErrFailedPrecondition, "this box's guest agent (version %s) is too old for interpreter sessions; rebuild the image (boxlite-mcp image build) and restart the box, or run with fresh: true", agentVersion)
	}
	return sessionResult(res), b, err
}

var errTooOld = errors.New("guest agent too old for sessions")

// sessionLimitHit classifies a session call the host's limit (its timeout
// plus SessionGrace, counted from when the host sent it) ended. A box
// that answered the cancel is alive, and the call ends alone: its result
// (the call waited behind the session's earlier calls, ran, and was
// interrupted at the limit) says it timed out; an agent's error says
// where the call was (still waiting for its turn, or its interpreter
// still starting). Only silence means the box is lost, and its
// connection (every call on it) must go.
func (m *Manager) sessionLimitHit(req SessionRequest, res *wire.SessionResult, err error, silent bool) error {
	var werr *wire.Error
	switch {
	case silent:
		return errNoAnswer
	case res != nil:
		res.TimedOut, res.Cancelled = true, false
		return nil
	case errors.As(err, &werr) && werr.Message == wire.MsgSessionQueueCancelled:
		return Errorf(ErrDeadlineExceeded, "session %q is still busy with an earlier call: this call waited for its turn longer than its time limit plus %s, and did not run; wait for that call to end, or use another session",
			req.Name, m.cfg.SessionGrace)
	case errors.As(err, &werr):
		return Errorf(ErrDeadlineExceeded, "the call did not finish within its time limit plus %s (%s); the box is up: call again", m.cfg.SessionGrace, werr.Message)
	}
	return errNoAnswer
}

// activity is a writer that notes every write (heartbeats are empty ones).
type activity struct {
	w    io.Writer
	seen func()
}

func (a activity) Write(p []byte) (int, error) {
	a.seen()
	if a.w == nil || len(p) == 0 {
		return len(p), nil
	}
	return a.w.Write(p)
}
