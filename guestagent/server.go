// Package guestagent is the agent that runs inside every box: it serves the
// host's calls (exec, files, info, shutdown) over the wire protocol, and when
// it is the box's first process it also does the init duties (mounts, zombie
// reaping, kernel modules, switching root).
//
// The same static binary (cmd/boxlite-guest) serves every engine; only the
// transport differs (vsock, virtio-serial, unix socket). guestagent imports
// no host package of boxlite-mcp.
package guestagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/session"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// Version is the agent's version, reported in the hello and in info.
var Version = "0.1.0"

// Config configures a Server. The zero value means "defaults".
type Config struct {
	// OutputLimit caps stdout+stderr bytes per exec when the request does
	// not set a lower one (default 16 MiB).
	OutputLimit int64
	// MaxFileSize caps write_file and read_file (default 64 MiB).
	MaxFileSize int64
	// HelloTimeout bounds how long a new connection may take to say hello (default 10 s).
	HelloTimeout time.Duration
	// PowerOff is called after a shutdown call was answered. The default
	// ends the agent process (outside a VM that ends the box); init mode
	// sets one that syncs and powers the machine off.
	PowerOff func(reboot bool)
	// Logger receives the agent's logs (default: discard).
	Logger *slog.Logger
	// Work, when set, is the cgroup user processes start in.
	Work *WorkCgroup
	// Renetwork, when set, configures the VM's network again (a clone).
	Renetwork func() error
	// SessionCwd is where interpreter sessions start when a call names no
	// directory (default /root, else /).
	SessionCwd string
}

func (c *Config) setDefaults() {
	if c.OutputLimit <= 0 {
		c.OutputLimit = 16 << 20
	}
	if c.MaxFileSize <= 0 {
		c.MaxFileSize = 64 << 20
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.PowerOff == nil {
		c.PowerOff = func(bool) { os.Exit(0) }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server serves the wire protocol. It is safe for concurrent use; every
// connection and every call runs in its own goroutine.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sessions *session.Manager

	shutdownOnce sync.Once
}

// NewServer returns a Server with cfg's defaults filled in.
func NewServer(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "agent")}
	s.sessions = s.newSessions()
	return s
}

// Serve accepts connections on l until ctx is done or l fails.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	go func() { <-ctx.Done(); l.Close() }()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.sessions.Close()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			if err := s.ServeConn(ctx, conn); err != nil {
				s.log.Debug("connection ended", "err", err)
			}
		}()
	}
}

// ServeConn runs the hello on conn, then serves calls on it until the
// connection or ctx ends. Work started by calls on a connection that ends is
// killed.
func (s *Server) ServeConn(ctx context.Context, conn io.ReadWriteCloser) error {
	defer conn.Close()
	if err := s.hello(conn); err != nil {
		return err
	}
	sess, err := yamux.Server(conn, wire.YamuxConfig())
	if err != nil {
		return err
	}
	defer sess.Close()
	go func() {
		select {
		case <-ctx.Done():
			sess.Close()
		case <-sess.CloseChan():
		}
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if sess.IsClosed() {
				return nil
			}
			return err
		}
		go s.serveStream(ctx, st)
	}
}

// hello reads the host's Hello and answers it. An incompatible host gets a
// reply with Error set, then the connection is closed.
func (s *Server) hello(conn io.ReadWriter) error {
	if dc, ok := conn.(interface{ SetDeadline(time.Time) error }); ok {
		dc.SetDeadline(time.Now().Add(s.cfg.HelloTimeout))
		defer dc.SetDeadline(time.Time{})
	}
	var h wire.Hello
	if err := wire.ReadJSON(wire.NewReader(conn), wire.FrameHello, &h); err != nil {
		return err
	}
	reply := wire.HelloReply{Protocol: wire.ProtocolVersion, Minor: wire.ProtocolMinor, AgentVersion: Version, Capabilities: wire.Capabilities}
	switch {
	case h.Magic != wire.Magic:
		reply.Error = "not a boxlite host (bad magic)"
	case h.Protocol != wire.ProtocolVersion:
		reply.Error = "protocol version mismatch"
	}
	if err := wire.WriteJSON(conn, wire.FrameHelloReply, reply); err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	s.log.Debug("host connected", "client", h.Client)
	return nil
}

// call is one stream's call: its frame reader and a writer shared by the
// goroutines answering it.
type call struct {
	st  net.Conn
	r   *wire.Reader
	wmu sync.Mutex
}

func (c *call) write(t wire.FrameType, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wire.WriteFrame(c.st, t, p)
}

func (c *call) result(res *wire.Result) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wire.WriteJSON(c.st, wire.FrameResult, res)
}

func (c *call) fail(err *wire.Error) error { return c.result(&wire.Result{Error: err}) }

func (s *Server) serveStream(ctx context.Context, st net.Conn) {
	defer st.Close()
	c := &call{st: st, r: wire.NewReader(st)}
	var req wire.Request
	if err := wire.ReadJSON(c.r, wire.FrameRequest, &req); err != nil {
		c.fail(wire.Errorf(wire.CodeInvalid, "bad request: %v", err))
		return
	}
	if werr := req.Validate(); werr != nil {
		c.fail(werr)
		return
	}
	var err error
	switch req.Op {
	case wire.OpPing:
		err = c.result(&wire.Result{})
	case wire.OpInfo:
		err = c.result(&wire.Result{Info: info()})
	case wire.OpExec:
		err = s.exec(ctx, c, req.Exec)
	case wire.OpWriteFile:
		err = s.writeFile(c, req.WriteFile)
	case wire.OpReadFile:
		err = s.readFile(c, req.ReadFile)
	case wire.OpStat:
		err = s.stat(c, req.Path)
	case wire.OpListDir:
		err = s.listDir(c, req.Path)
	case wire.OpShutdown:
		err = s.shutdown(c, req.Shutdown)
	case wire.OpSession:
		err = s.session(ctx, c, req.Session)
	case wire.OpClone:
		err = s.clone(c, req.Clone)
	}
	if err != nil {
		s.log.Debug("call ended with error", "op", req.Op, "err", err)
	}
}

func (s *Server) shutdown(c *call, req *wire.ShutdownReq) error {
	reboot := req != nil && req.Reboot
	syncFS()
	err := c.result(&wire.Result{})
	s.shutdownOnce.Do(func() {
		// Give the reply a moment to leave before the machine goes away.
		go func() {
			time.Sleep(50 * time.Millisecond)
			s.sessions.Close()
			s.cfg.PowerOff(reboot)
		}()
	})
	return err
}
