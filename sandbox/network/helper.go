package network

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// HelperArg is the hidden first argument that turns the boxlite-mcp binary
// into a box's network helper. Binaries embedding the engines call
// HelperMain when they see it.
const HelperArg = "__boxlite-net"

// FD names a descriptor the engine hands to the helper. The numbers are the
// contract between Launch and HelperMain; build ExtraFiles with
// jailspec.ExtraFiles, never by position.
type FD int

// The helper's inherited descriptors.
const (
	FDReady FD = 3 + iota // write end of the ready pipe: one byte once serving
	FDLink                // optional: the guest's link, one frame per read/write (a tap)
	fdEnd
)

// What the helper needs, kept small so it can run confined (an unprivileged
// uid, its own namespaces but the host's network, a seccomp filter): its
// configuration on stdin, FDReady, the link (FDLink, or a unix socket path
// to listen on for one connection), a control socket path to listen on,
// outbound sockets to the internet and the upstream resolvers, and stderr
// for its log. It reads no host file and writes nothing but its sockets.

// helperConfig is what Launch sends the helper on stdin.
type helperConfig struct {
	BoxID     string   `json:"box_id"`
	Policy    Policy   `json:"policy"`
	Resolvers []string `json:"resolvers"`
	// Listen, when set, is a unix socket the helper listens on for the one
	// connection carrying the link in QEMU's stream framing; else the link
	// is FDLink.
	Listen string `json:"listen,omitempty"`
	// Control is the unix socket the helper answers Query on.
	Control string `json:"control"`
	// AcceptTimeout bounds the wait for Listen's connection.
	AcceptTimeout time.Duration `json:"accept_timeout"`
}

// HelperMain runs a box's network helper: the JSON configuration on stdin,
// ready signalled on FDReady, serving until the link ends (the box went
// away) or SIGTERM. It returns the process exit code.
func HelperMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "network")
	// gvisor-tap-vsock logs through logrus: to stderr too, warnings only.
	logrus.SetOutput(os.Stderr)
	logrus.SetLevel(logrus.WarnLevel)
	var cfg helperConfig
	if err := json.NewDecoder(io.LimitReader(os.Stdin, 1<<20)).Decode(&cfg); err != nil {
		log.Error("reading the configuration", "err", err)
		return 2
	}
	log = log.With("box_id", cfg.BoxID, "pid", os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runHelper(ctx, cfg, log); err != nil && ctx.Err() == nil {
		log.Error("network helper failed", "err", err)
		return 1
	}
	log.Info("network helper done")
	return 0
}

func runHelper(ctx context.Context, cfg helperConfig, log *slog.Logger) error {
	st, err := NewStack(StackConfig{Filter: NewFilter(cfg.Policy, nil), Resolvers: cfg.Resolvers, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	os.Remove(cfg.Control)
	ctl, err := net.Listen("unix", cfg.Control)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer ctl.Close()
	go serveControl(ctl, st)

	var link *packetConn
	var ln net.Listener
	if cfg.Listen != "" {
		os.Remove(cfg.Listen)
		if ln, err = net.Listen("unix", cfg.Listen); err != nil {
			return fmt.Errorf("link socket: %w", err)
		}
		defer ln.Close()
	} else {
		if link, err = fileLink(int(FDLink), "link"); err != nil {
			return err
		}
	}
	ready := os.NewFile(uintptr(FDReady), "ready")
	if ready != nil {
		ready.Write([]byte{1})
		ready.Close()
	}
	log.Info("network helper serving", "policy", cfg.Policy.String(), "resolvers", cfg.Resolvers)
	if ln != nil {
		c, err := acceptOne(ctx, ln, cfg.AcceptTimeout)
		ln.Close()
		if err != nil {
			return fmt.Errorf("waiting for the VM's link: %w", err)
		}
		link = streamLink(c)
	}
	err = st.ServeLink(ctx, link)
	c := st.Counters()
	log.Info("link ended", "err", err, "bytes_sent", c.Sent, "bytes_received", c.Received)
	return nil
}

// acceptOne accepts the link's one connection within timeout.
func acceptOne(ctx context.Context, ln net.Listener, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ul := ln.(*net.UnixListener)
	ul.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { ul.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	return ul.Accept()
}

// query is a control request: the refusals since Since.
type query struct {
	Since time.Time `json:"since"`
}

// maxReported caps the refusals one status carries.
const maxReported = 20

// Status is what a helper reports: its policy, counters and refusals.
type Status struct {
	Policy string `json:"policy"`
	Mode   string `json:"mode"`
	Counters
	Denied []Denial `json:"denied"`
	// DeniedOmitted is how many more refusals there were than Denied holds.
	DeniedOmitted int `json:"denied_omitted,omitempty"`
}

func serveControl(l net.Listener, st *Stack) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var q query
			line, err := bufio.NewReader(io.LimitReader(c, 4096)).ReadBytes('\n')
			if err != nil || json.Unmarshal(line, &q) != nil {
				return
			}
			p := st.cfg.Filter.Policy()
			s := Status{Policy: p.String(), Mode: p.Mode(), Counters: st.Counters()}
			s.Denied, s.DeniedOmitted = st.rec.Since(q.Since, maxReported)
			json.NewEncoder(c).Encode(s)
		}()
	}
}
