package network

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/confinespec"
	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
)

// Host is the host-side configuration every engine shares. Zero fields
// take defaults.
type Host struct {
	// Exe is the binary re-executed as the helper (default: this
	// executable, which must call HelperMain on HelperArg).
	Exe string
	// ResolvConf lists the upstream resolvers (default /etc/resolv.conf).
	ResolvConf string
	// Resolvers, when set, are the upstream resolvers ("ip:port") instead
	// of ResolvConf's (tests).
	Resolvers []string
}

// DefaultResolvConf is where the host's resolvers are listed.
const DefaultResolvConf = "/etc/resolv.conf"

// ControlPath and LinkPath derive a box's helper sockets from its agent
// socket (which the manager keeps short enough for sun_path).
func ControlPath(agentSocket string) string { return agentSocket + ".nc" }

// LinkPath is the unix socket a VM's stream netdev connects to.
func LinkPath(agentSocket string) string { return agentSocket + ".nl" }

// Launch configures one helper.
type Launch struct {
	Host
	BoxID  string
	Policy Policy
	// Control is the helper's control socket (see ControlPath): Start
	// listens on it and hands the listener to the helper.
	Control string
	// The guest's link: a tap (Link), a connected stream socket whose
	// other end is the VM's (Stream), or a unix socket path the VM connects
	// to once (Listen; Start listens on it and hands the listener over).
	Link   *os.File
	Stream *os.File
	Listen string
	// Log receives the helper's log (its stderr).
	Log string
	// ReadyTimeout bounds the start (default 10 s).
	ReadyTimeout time.Duration
	// Stage is the confine stage (a boxlite-guest binary; see package
	// sandbox/confine) and UID the unprivileged host uid the helper runs
	// as. The helper always runs confined.
	Stage string
	UID   uint32
}

// CgroupName is the name of the cgroup of box id's network helper.
func CgroupName(boxID string) string { return boxID + ".net" }

// helperLimits bound one helper: its buffers (TCP windows of the box's
// connections) and threads.
var helperLimits = cgroups.Limits{MemoryBytes: 512 << 20, PidsMax: 128, CPUWeight: 1}

// Start spawns the helper, confined and detached (own session: it outlives
// the server like the box), and returns its identity once it serves. The
// caller records the identity in the box's handle, kills it with the box
// (Stop) and then releases its cgroup (Release). A helper whose box is gone
// ends by itself: a tap link ends with the box's namespace, a stream link
// with the VM, and an unused Listen after AcceptTimeout.
func Start(ctx context.Context, l Launch) (proc.ID, error) {
	exePath := l.Exe
	if exePath == "" {
		var err error
		if exePath, err = os.Executable(); err != nil {
			return proc.ID{}, err
		}
	}
	resolvConf := l.ResolvConf
	if resolvConf == "" {
		resolvConf = DefaultResolvConf
	}
	resolvers := l.Resolvers
	if len(resolvers) == 0 {
		var err error
		if resolvers, err = HostResolvers(resolvConf); err != nil {
			return proc.ID{}, err
		}
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	open := func(path string) (*os.File, error) {
		f, err := os.Open(path)
		if err == nil {
			files = append(files, f)
		}
		return f, err
	}
	listen := func(path string) (*os.File, error) {
		os.Remove(path)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			return nil, err
		}
		ln.SetUnlinkOnClose(false)
		f, err := ln.File()
		ln.Close()
		if err == nil {
			files = append(files, f)
		}
		return f, err
	}
	stage, err := confine.StageBinary(l.Stage)
	if err != nil {
		return proc.ID{}, fmt.Errorf("the network helper's confinement stage: %w", err)
	}
	files = append(files, stage)
	exe, err := open(exePath)
	if err != nil {
		return proc.ID{}, err
	}
	ctl, err := listen(l.Control)
	if err != nil {
		return proc.ID{}, fmt.Errorf("network helper control socket: %w", err)
	}
	cfg := helperConfig{BoxID: l.BoxID, Policy: l.Policy, Resolvers: resolvers, AcceptTimeout: 5 * time.Minute,
		ReadyFD: confinespec.PassFD(0), ControlFD: confinespec.PassFD(1), LinkFD: confinespec.PassFD(2)}
	var link *os.File
	switch {
	case l.Link != nil:
		cfg.Link, link = LinkTap, l.Link
	case l.Stream != nil:
		cfg.Link, link = LinkStream, l.Stream
	case l.Listen != "":
		cfg.Link = LinkListen
		if link, err = listen(l.Listen); err != nil {
			return proc.ID{}, fmt.Errorf("network helper link socket: %w", err)
		}
	default:
		return proc.ID{}, errors.New("network helper: no link")
	}
	cfgJSON, _ := json.Marshal(cfg)
	logf, err := os.OpenFile(l.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return proc.ID{}, fmt.Errorf("network helper log: %w", err)
	}
	files = append(files, logf)
	logStart, _ := logf.Seek(0, io.SeekEnd)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return proc.ID{}, err
	}
	files = append(files, readyR, readyW)
	// The configuration goes through a pipe: the stage reads its own from
	// stdin, then the helper reads the rest.
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return proc.ID{}, err
	}
	files = append(files, cfgR)
	p, err := confine.Start(confine.Spec{Name: CgroupName(l.BoxID), UID: l.UID, Stage: stage, Exe: exe,
		Args: []string{"boxlite-net", HelperArg}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Pass: []*os.File{readyW, ctl, link}, HostNetwork: true, Hostname: "net-" + l.BoxID,
		Stdin: cfgR, Stdout: logf, Stderr: logf, Limits: helperLimits})
	if err != nil {
		cfgW.Close()
		return proc.ID{}, fmt.Errorf("starting the network helper: %w", err)
	}
	readyW.Close()
	go func() { cfgW.Write(cfgJSON); cfgW.Close() }()
	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := readyR.Read(b[:])
		ready <- err
	}()
	timeout := l.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	fail := func(err error) (proc.ID, error) {
		p.Abort()
		return proc.ID{}, fmt.Errorf("%w%s", err, logTail(l.Log, logStart))
	}
	if err := p.Go(); err != nil {
		return fail(err)
	}
	select {
	case err := <-ready:
		if err != nil {
			return fail(errors.New("the network helper exited before it was ready"))
		}
		return p.ID, nil
	case err := <-p.Exited:
		return fail(fmt.Errorf("the network helper exited: %v", err))
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(timeout):
		return fail(fmt.Errorf("the network helper was not ready in %s", timeout))
	}
}

// Release removes the cgroup of box id's network helper once it has
// ended (Stop); it kills anything still in it first.
func Release(boxID string) error { return confine.Remove(CgroupName(boxID)) }

// logTail is the helper's last log line since offset, as ": line".
func logTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) <= offset {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b[offset:])), "\n")
	return ": " + lines[len(lines)-1]
}

// Stop ends a helper (a gone one is fine) and waits for it briefly.
func Stop(id *proc.ID) {
	if id == nil || id.PID == 0 {
		return
	}
	id.KillGroup()
	id.Wait(2 * time.Second)
}

// Query asks a box's helper for its status and the refusals seen since
// since. It fails when no helper serves control (a box without network, or
// not running).
func Query(ctx context.Context, control string, since time.Time) (*Status, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "unix", control)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	q, _ := json.Marshal(query{Since: since})
	if _, err := c.Write(append(q, '\n')); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(io.LimitReader(c, 1<<20)).ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(line, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Available describes, for doctor, how boxes get their network here.
func Available() string {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "network: /dev/net/tun missing: jail boxes with network cannot start (modprobe tun)"
	}
	return "network: a user-mode stack per box (gvisor-tap-vsock) with its egress policy; host, loopback, link-local and private addresses refused"
}
