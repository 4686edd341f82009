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

// What the helper needs, kept small so it runs confined (package
// sandbox/confine: an unprivileged uid, its own namespaces but the host's
// network, no capabilities, the jail's seccomp filter, a root holding
// nothing of the host's but its libraries): its configuration on stdin and
// three descriptors whose numbers the configuration names — the ready pipe,
// the control socket (listening) and the guest's link — outbound sockets to
// the internet and the upstream resolvers, and stderr for its log. It
// opens no host file and creates no socket by path.

// Link kinds: how the guest's frames reach the helper.
const (
	LinkTap    = "tap"    // a tap device: one frame per read/write (the jail)
	LinkStream = "stream" // a connected unix stream socket in QEMU's framing (qemu)
	LinkListen = "listen" // a listening unix socket: one connection in QEMU's framing (krun)
)

// helperConfig is what Launch sends the helper on stdin.
type helperConfig struct {
	BoxID     string   `json:"box_id"`
	Policy    Policy   `json:"policy"`
	Resolvers []string `json:"resolvers"`
	// ReadyFD, ControlFD and LinkFD are the helper's descriptors: the write
	// end of the ready pipe (one byte once serving), the control socket it
	// answers Query on, and the link, of kind Link.
	ReadyFD   int    `json:"ready_fd"`
	ControlFD int    `json:"control_fd"`
	LinkFD    int    `json:"link_fd"`
	Link      string `json:"link"`
	// AcceptTimeout bounds the wait for a LinkListen connection.
	AcceptTimeout time.Duration `json:"accept_timeout"`
}

// HelperMain runs a box's network helper: the JSON configuration on stdin,
// ready signalled on its ready descriptor, serving until the link ends (the box went
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
	ctl, err := net.FileListener(os.NewFile(uintptr(cfg.ControlFD), "control"))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer ctl.Close()
	go serveControl(ctl, st)

	var link *packetConn
	var ln net.Listener
	switch cfg.Link {
	case LinkTap:
		if link, err = fileLink(cfg.LinkFD, "link"); err != nil {
			return err
		}
	case LinkStream:
		lf := os.NewFile(uintptr(cfg.LinkFD), "link")
		c, err := net.FileConn(lf)
		if err != nil {
			return fmt.Errorf("link socket: %w", err)
		}
		lf.Close()
		link = streamLink(c)
	case LinkListen:
		lf := os.NewFile(uintptr(cfg.LinkFD), "link")
		if ln, err = net.FileListener(lf); err != nil {
			return fmt.Errorf("link socket: %w", err)
		}
		lf.Close()
		defer ln.Close()
	default:
		return fmt.Errorf("unknown link kind %q", cfg.Link)
	}
	if ready := os.NewFile(uintptr(cfg.ReadyFD), "ready"); ready != nil {
		ready.Write([]byte{1})
		ready.Close()
	}
	log.Info("network helper serving", "policy", cfg.Policy.String(), "resolvers", cfg.Resolvers, "link", cfg.Link)
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
