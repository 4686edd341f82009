package network

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/jailspec"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
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
	// Control is the helper's control socket (see ControlPath).
	Control string
	// Link is the guest's link descriptor (a tap), or
	Link *os.File
	// Listen is a unix socket for one stream connection (QEMU's netdev).
	Listen string
	// Log receives the helper's log (its stderr).
	Log string
	// ReadyTimeout bounds the start (default 10 s).
	ReadyTimeout time.Duration
}

// Start spawns the helper, detached (own session: it outlives the server
// like the box), and returns its identity once it serves. The caller
// records the identity in the box's handle and kills it with the box. A
// helper whose box is gone ends by itself: a tap link ends with the box's
// namespace, a stream link with the VM, and an unused Listen after
// AcceptTimeout.
func Start(ctx context.Context, l Launch) (proc.ID, error) {
	exe := l.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
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
	cfg, _ := json.Marshal(helperConfig{BoxID: l.BoxID, Policy: l.Policy, Resolvers: resolvers, Listen: l.Listen,
		Control: l.Control, AcceptTimeout: 5 * time.Minute})
	logf, err := os.OpenFile(l.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return proc.ID{}, fmt.Errorf("network helper log: %w", err)
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return proc.ID{}, err
	}
	defer readyR.Close()
	fds := map[FD]*os.File{FDReady: readyW}
	if l.Link != nil {
		fds[FDLink] = l.Link
	}
	cmd := exec.Command(exe, HelperArg)
	cmd.Stdin = bytes.NewReader(cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.ExtraFiles = jailspec.ExtraFiles(fdEnd, fds)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return proc.ID{}, fmt.Errorf("starting the network helper: %w", err)
	}
	readyW.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // owns Wait: reaps the helper whenever it ends
	id, err := proc.Of(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		return proc.ID{}, fmt.Errorf("the network helper vanished as it started: %w", err)
	}
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
		id.KillGroup()
		return proc.ID{}, fmt.Errorf("%w%s", err, logTail(l.Log, logStart))
	}
	select {
	case err := <-ready:
		if err != nil {
			return fail(errors.New("the network helper exited before it was ready"))
		}
		return id, nil
	case err := <-exited:
		return fail(fmt.Errorf("the network helper exited: %v", err))
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(timeout):
		return fail(fmt.Errorf("the network helper was not ready in %s", timeout))
	}
}

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
