package guestagent

import (
	"context"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/session"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// newSessions is the agent's session manager: interpreters start like
// execs do (in the work cgroup, tracked for the reaper, with the box's
// environment).
func (s *Server) newSessions() *session.Manager {
	return session.New(session.Config{
		OutputLimit: s.cfg.OutputLimit,
		Cwd:         s.cfg.SessionCwd,
		Env:         baseEnv,
		Start:       s.cfg.Work.start,
		Reaped:      untrack,
		Logger:      s.cfg.Logger,
	})
}

// callSink sends a session call's output as frames.
type callSink struct{ c *call }

func (k callSink) Stdout(p []byte) error { return k.c.write(wire.FrameStdout, p) }
func (k callSink) Stderr(p []byte) error { return k.c.write(wire.FrameStderr, p) }
func (k callSink) Output(h wire.OutputHeader, data []byte) error {
	k.c.wmu.Lock()
	defer k.c.wmu.Unlock()
	if err := wire.WriteJSON(k.c.st, wire.FrameOutput, h); err != nil {
		return err
	}
	if err := wire.WriteData(k.c.st, wire.FrameData, data); err != nil {
		return err
	}
	return nil
}

// session runs a session call: it reads the code, then runs it while a
// Cancel frame, or the host going away, interrupts it.
func (s *Server) session(ctx context.Context, c *call, req *wire.SessionRequest) error {
	code := make([]byte, 0, req.CodeBytes)
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return err
		}
		if f.Type == wire.FrameEOF {
			break
		}
		if f.Type != wire.FrameData {
			return c.fail(wire.Errorf(wire.CodeInvalid, "unexpected %s frame in a session call's code", f.Type))
		}
		if int64(len(code)+len(f.Payload)) > req.CodeBytes {
			return c.fail(wire.Errorf(wire.CodeInvalid, "session code longer than the %d bytes announced", req.CodeBytes))
		}
		code = append(code, f.Payload...)
	}
	if int64(len(code)) != req.CodeBytes {
		return c.fail(wire.Errorf(wire.CodeInvalid, "session code of %d bytes, %d announced", len(code), req.CodeBytes))
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			f, err := c.r.ReadFrame()
			if err != nil || f.Type == wire.FrameCancel {
				cancel() // interrupts the code; the session keeps its state
				return
			}
		}
	}()
	// A heartbeat (an empty stdout frame) while the call runs, so the host
	// can tell a silent computation or a slow interpreter start from a
	// frozen box.
	beat := time.NewTicker(wire.SessionHeartbeat)
	defer beat.Stop()
	go func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case <-beat.C:
				c.write(wire.FrameStdout, nil)
			}
		}
	}()
	res, err := s.sessions.Run(runCtx, req, string(code), callSink{c})
	if err != nil {
		if werr, ok := err.(*wire.Error); ok {
			return c.fail(werr)
		}
		return c.fail(wire.Errorf(wire.CodeInternal, "%v", err))
	}
	return c.result(&wire.Result{Session: res})
}
