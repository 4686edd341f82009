// Package client is the host side of the guest agent protocol: it says hello
// on a connection to an agent, then runs calls on it, one yamux stream each.
//
// A Client is safe for concurrent use; calls do not block each other. Every
// call takes a context: cancelling an exec asks the agent to kill the
// process group (and closing the stream does so too if the agent does not
// answer in time); cancelling any other call abandons its stream.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// ErrDisconnected means the connection to the agent broke during a call.
var ErrDisconnected = errors.New("agent connection lost")

// ErrIncompatible means the agent speaks another protocol version.
var ErrIncompatible = errors.New("incompatible guest agent")

// cancelGrace is how long a cancelled exec waits for the agent's result
// (which confirms the kill) before abandoning the stream.
const cancelGrace = 2 * time.Second

// Client talks to one agent over one connection.
type Client struct {
	conn  net.Conn
	sess  *yamux.Session
	hello wire.HelloReply
}

// New says hello on conn and starts the multiplexer. ctx bounds the hello
// only. On error conn is closed. Name identifies the host in agent logs.
func New(ctx context.Context, conn net.Conn, name string) (*Client, error) {
	fail := func(err error) (*Client, error) {
		conn.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	if err := wire.WriteJSON(conn, wire.FrameHello, wire.Hello{Magic: wire.Magic, Protocol: wire.ProtocolVersion, Minor: wire.ProtocolMinor, Client: name}); err != nil {
		stop()
		return fail(fmt.Errorf("agent hello: %w", ctxErr(ctx, err)))
	}
	var reply wire.HelloReply
	err := wire.ReadJSON(wire.NewReader(conn), wire.FrameHelloReply, &reply)
	if !stop() {
		return fail(fmt.Errorf("agent hello: %w", context.Cause(ctx)))
	}
	if err != nil {
		return fail(fmt.Errorf("agent hello: %w", ctxErr(ctx, err)))
	}
	if reply.Error != "" || reply.Protocol != wire.ProtocolVersion {
		return fail(fmt.Errorf("agent %s speaks protocol %d, this host speaks %d (%s); rebuild the image with this boxlite-mcp: %w",
			reply.AgentVersion, reply.Protocol, wire.ProtocolVersion, reply.Error, ErrIncompatible))
	}
	sess, err := yamux.Client(conn, wire.YamuxConfig())
	if err != nil {
		return fail(err)
	}
	return &Client{conn: conn, sess: sess, hello: reply}, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// Hello is what the agent said about itself.
func (c *Client) Hello() wire.HelloReply { return c.hello }

// Close ends the connection; calls in flight fail and the agent kills their work.
func (c *Client) Close() error { return c.sess.Close() }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.sess.CloseChan() }

// Closed reports whether the connection has ended.
func (c *Client) Closed() bool { return c.sess.IsClosed() }

// stream is one call in progress.
type stream struct {
	st  *yamux.Stream
	r   *wire.Reader
	wmu sync.Mutex
}

func (s *stream) write(t wire.FrameType, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return wire.WriteFrame(s.st, t, p)
}

func (c *Client) start(ctx context.Context, req *wire.Request) (*stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	s := &stream{st: st, r: wire.NewReader(st)}
	if err := wire.WriteJSON(st, wire.FrameRequest, req); err != nil {
		st.Close()
		return nil, fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	return s, nil
}

// readResult reads frames until the Result, handing other frames to onFrame.
func (s *stream) readResult(ctx context.Context, onFrame func(wire.Frame) error) (*wire.Result, error) {
	for {
		f, err := s.r.ReadFrame()
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, fmt.Errorf("%w: %v", ErrDisconnected, err)
		}
		if f.Type == wire.FrameResult {
			var res wire.Result
			if err := wire.DecodeJSON(f, wire.FrameResult, &res); err != nil {
				return nil, err
			}
			if res.Error != nil {
				return &res, res.Error
			}
			return &res, nil
		}
		if onFrame == nil {
			return nil, fmt.Errorf("%w: unexpected %s frame", wire.ErrBadFrame, f.Type)
		}
		if err := onFrame(f); err != nil {
			return nil, err
		}
	}
}

// simple runs a call with no data frames. Cancelling ctx abandons it.
func (c *Client) simple(ctx context.Context, req *wire.Request) (*wire.Result, error) {
	s, err := c.start(ctx, req)
	if err != nil {
		return nil, err
	}
	defer s.st.Close()
	stop := context.AfterFunc(ctx, func() { s.st.SetReadDeadline(time.Now()) })
	defer stop()
	return s.readResult(ctx, nil)
}

// Ping checks the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.simple(ctx, &wire.Request{Op: wire.OpPing})
	return err
}

// Info asks the agent about the box.
func (c *Client) Info(ctx context.Context) (*wire.Info, error) {
	res, err := c.simple(ctx, &wire.Request{Op: wire.OpInfo})
	if err != nil {
		return nil, err
	}
	return res.Info, nil
}

// Stat describes path (not following a final symlink).
func (c *Client) Stat(ctx context.Context, path string) (*wire.FileInfo, error) {
	res, err := c.simple(ctx, &wire.Request{Op: wire.OpStat, Path: path})
	if err != nil {
		return nil, err
	}
	return res.File, nil
}

// ListDir lists a directory; truncated says there were more entries.
func (c *Client) ListDir(ctx context.Context, path string) (entries []wire.FileInfo, truncated bool, err error) {
	res, err := c.simple(ctx, &wire.Request{Op: wire.OpListDir, Path: path})
	if err != nil {
		return nil, false, err
	}
	return res.Entries, res.Truncate, nil
}

// Shutdown asks the agent to sync and power the box off. It returns once
// the agent acknowledged; the box goes down shortly after.
func (c *Client) Shutdown(ctx context.Context, reboot bool) error {
	_, err := c.simple(ctx, &wire.Request{Op: wire.OpShutdown, Shutdown: &wire.ShutdownReq{Reboot: reboot}})
	return err
}

// ExecIO connects an exec's standard streams. Nil writers discard output.
type ExecIO struct {
	// Stdin, when set, is streamed to the process; req.Stdin must then be empty.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Exec runs a program in the box and streams its output to io as it comes.
// A non-zero exit is a normal result, not an error. Cancelling ctx kills
// the process group; Exec then returns the result (Cancelled set) together
// with ctx's error, or only the error if the agent did not confirm in time.
func (c *Client) Exec(ctx context.Context, req wire.ExecRequest, eio ExecIO) (*wire.ExecResult, error) {
	req.StdinStream = eio.Stdin != nil
	res, err := c.streamCall(ctx, streamed{req: &wire.Request{Op: wire.OpExec, Exec: &req}, what: "exec", grace: cancelGrace,
		in: eio.Stdin, inFrame: wire.FrameStdin, stdout: eio.Stdout, stderr: eio.Stderr})
	var out *wire.ExecResult
	if res != nil {
		out = res.Exec
	}
	return finish(ctx, out, err, "exec")
}

// streamed is a call whose input and output stream as frames: exec and
// session calls.
type streamed struct {
	req  *wire.Request
	what string // the call, for errors
	// grace is how long a cancelled call waits for the agent's result.
	grace time.Duration
	// in, when set, is sent as inFrame frames, then an EOF frame.
	in      io.Reader
	inFrame wire.FrameType
	// stdout and stderr receive the output frames (nil: discarded); other,
	// when set, any other frame before the result.
	stdout, stderr io.Writer
	other          func(wire.Frame) error
}

// streamCall runs a streamed call: one frame loop for every such call. A
// cancelled ctx sends a cancel frame and waits up to grace for the result.
func (c *Client) streamCall(ctx context.Context, call streamed) (*wire.Result, error) {
	s, err := c.start(ctx, call.req)
	if err != nil {
		return nil, err
	}
	defer s.st.Close()
	stop := context.AfterFunc(ctx, func() {
		s.write(wire.FrameCancel, nil)
		s.st.SetReadDeadline(time.Now().Add(call.grace))
	})
	defer stop()
	if call.in != nil {
		go func() {
			bp := chunkPool.Get().(*[]byte)
			defer chunkPool.Put(bp)
			buf := *bp
			for {
				n, err := call.in.Read(buf)
				if n > 0 {
					if s.write(call.inFrame, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					s.write(wire.FrameEOF, nil)
					return
				}
			}
		}()
	}
	stdout, stderr := orDiscard(call.stdout), orDiscard(call.stderr)
	return s.readResult(ctx, func(f wire.Frame) error {
		switch {
		case f.Type == wire.FrameStdout:
			stdout.Write(f.Payload)
		case f.Type == wire.FrameStderr:
			stderr.Write(f.Payload)
		case call.other != nil:
			return call.other(f)
		default:
			return fmt.Errorf("%w: unexpected %s frame during %s", wire.ErrBadFrame, f.Type, call.what)
		}
		return nil
	})
}

// finish returns a streamed call's result, with ctx's error when the call
// was cancelled (the result then says so), or err when there is none.
func finish[T any](ctx context.Context, res *T, err error, what string) (*T, error) {
	if res != nil {
		if ctx.Err() != nil {
			return res, context.Cause(ctx)
		}
		return res, nil
	}
	if err == nil {
		err = fmt.Errorf("%w: %s result without %s data", wire.ErrBadFrame, what, what)
	}
	return nil, err
}

// chunkPool holds the buffers streamed inputs are sent from (a session
// call sends its code so; a fresh 64 KiB buffer per call was a sixth of
// the server's CPU time on a warm call).
var chunkPool = sync.Pool{New: func() any { b := make([]byte, wire.ChunkSize); return &b }}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// WriteFile streams r into a file in the box. size is the exact byte count
// when known (the agent refuses oversize files up front), else -1. The file
// is replaced atomically; on any error the old file is left as it was.
func (c *Client) WriteFile(ctx context.Context, req wire.WriteFileReq, r io.Reader) (*wire.Result, error) {
	s, err := c.start(ctx, &wire.Request{Op: wire.OpWriteFile, WriteFile: &req})
	if err != nil {
		return nil, err
	}
	defer s.st.Close()
	stop := context.AfterFunc(ctx, func() { s.st.SetDeadline(time.Now()) })
	defer stop()
	// Send while reading: the agent may answer early (too large, no space).
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, wire.ChunkSize)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if werr := s.write(wire.FrameData, buf[:n]); werr != nil {
					sendErr <- nil // the agent hung up; its result says why
					return
				}
			}
			if errors.Is(err, io.EOF) {
				sendErr <- s.write(wire.FrameEOF, nil)
				return
			}
			if err != nil {
				// Tell the agent nothing more comes; closing the stream
				// makes it discard the partial file.
				sendErr <- fmt.Errorf("reading source: %w", err)
				s.st.SetReadDeadline(time.Now())
				return
			}
		}
	}()
	res, err := s.readResult(ctx, nil)
	if err != nil {
		select {
		case serr := <-sendErr:
			if serr != nil && ctx.Err() == nil {
				return nil, serr
			}
		default:
		}
	}
	return res, err
}

// ReadFile streams a file from the box into w. Result.Bytes is what was
// sent and Result.Truncate says the file had more than asked for.
func (c *Client) ReadFile(ctx context.Context, req wire.ReadFileReq, w io.Writer) (*wire.Result, error) {
	s, err := c.start(ctx, &wire.Request{Op: wire.OpReadFile, ReadFile: &req})
	if err != nil {
		return nil, err
	}
	defer s.st.Close()
	stop := context.AfterFunc(ctx, func() { s.st.SetReadDeadline(time.Now()) })
	defer stop()
	return s.readResult(ctx, func(f wire.Frame) error {
		if f.Type != wire.FrameData {
			return fmt.Errorf("%w: unexpected %s frame during read_file", wire.ErrBadFrame, f.Type)
		}
		_, err := w.Write(f.Payload)
		return err
	})
}

// Clone gives the agent of a VM resumed from a memory snapshot its new
// identity (see wire.CloneReq).
func (c *Client) Clone(ctx context.Context, req wire.CloneReq) error {
	_, err := c.simple(ctx, &wire.Request{Op: wire.OpClone, Clone: &req})
	return err
}
