package session

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

//go:embed driver.js
var driverJS string

// maxDriverLine bounds one message from the driver (an image of
// wire.MaxImageBytes in base64, with room to spare).
const maxDriverLine = 8 << 20

// nodeInterp is the Node driver (driver.js) of a JavaScript session; it
// talks to the agent over a socket pair on its fd 3.
type nodeInterp struct {
	proc *process
	ctl  net.Conn
	eof  chan struct{} // closed when the driver's messages end

	wmu sync.Mutex // serialises writes to ctl

	mu    sync.Mutex
	job   *nodeJob
	seq   int
	count int
}

type nodeJob struct {
	id   int
	out  *output
	done chan nodeDone
}

// nodeMsg is a message from the driver.
type nodeMsg struct {
	T     string  `json:"t"`
	N     string  `json:"n"`
	B     string  `json:"b"`
	Mime  string  `json:"mime"`
	ID    int     `json:"id"`
	Value *string `json:"value"`
	Error *struct {
		Name, Message, Stack string
	} `json:"error"`
}

type nodeDone struct {
	value *string
	err   *wire.SessionError
}

func startNode(ctx context.Context, m *Manager, k key, env []string, cwd string, cred *syscall.Credential) (interp, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parent, child := os.NewFile(uintptr(fds[0]), "driver-ctl"), os.NewFile(uintptr(fds[1]), "driver-ctl-child")
	argv := []string{m.cfg.Node, "--expose-internals", "-e", driverJS}
	p, err := m.startProcess(argv, env, cwd, []*os.File{child}, cred)
	child.Close()
	if err != nil {
		parent.Close()
		return nil, err
	}
	conn, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		p.kill("failed start")
		return nil, err
	}
	n := &nodeInterp{proc: p, ctl: conn, eof: make(chan struct{})}
	p.mu.Lock()
	p.forward = n.forward
	p.mu.Unlock()
	ready := make(chan struct{})
	go n.read(m, ready)
	go func() {
		<-p.done
		conn.Close()
	}()
	select {
	case <-ready:
		return n, nil
	case <-p.done:
		if strings.Contains(p.d.tail, "bad option") {
			return nil, wire.Errorf(wire.CodeNotFound, "this box's node does not accept --expose-internals; JavaScript sessions need Node.js 12 or later (use fresh: true)")
		}
		return nil, fmt.Errorf("the Node.js driver exited during start (%s): %s", p.d.reason, clipText(p.d.tail, 2048))
	case <-ctx.Done():
		p.kill("failed start")
		return nil, fmt.Errorf("the Node.js driver did not start in time: %w", ctx.Err())
	}
}

// forward passes the driver process's own output (child processes that
// inherited its stdout, native code) to the running job.
func (n *nodeInterp) forward(stderr bool, p []byte) {
	n.mu.Lock()
	j := n.job
	n.mu.Unlock()
	if j != nil {
		j.out.stream(stderr, p)
	}
}

// read handles the driver's messages until its socket ends; a message
// that does not parse ends the driver.
func (n *nodeInterp) read(m *Manager, ready chan struct{}) {
	defer close(n.eof)
	sc := bufio.NewScanner(n.ctl)
	sc.Buffer(make([]byte, 64<<10), maxDriverLine)
	for sc.Scan() {
		var msg nodeMsg
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			m.log.Warn("bad message from the Node.js driver", "err", err)
			n.proc.kill("the Node.js driver sent a message the agent cannot read")
			return
		}
		n.mu.Lock()
		j := n.job
		n.mu.Unlock()
		switch msg.T {
		case "ready":
			if ready != nil {
				close(ready)
				ready = nil
			}
		case "out":
			if b, err := base64.StdEncoding.DecodeString(msg.B); err == nil && j != nil {
				j.out.stream(msg.N == "stderr", b)
			}
		case "display":
			if b, err := base64.StdEncoding.DecodeString(msg.B); err == nil && j != nil && msg.Mime != "" {
				j.out.rich(wire.OutputDisplay, msg.Mime, b)
			}
		case "done":
			if j == nil || msg.ID != j.id {
				continue
			}
			d := nodeDone{value: msg.Value}
			if msg.Error != nil {
				d.err = &wire.SessionError{Name: msg.Error.Name, Message: clipText(msg.Error.Message, 16<<10), Traceback: clipText(msg.Error.Stack, maxTraceback)}
			}
			j.done <- d
		}
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		n.proc.kill("the Node.js driver sent a message over the size limit")
	}
}

func (n *nodeInterp) run(j *job) *pending {
	p := &pending{done: make(chan struct{})}
	n.mu.Lock()
	n.seq++
	nj := &nodeJob{id: n.seq, out: j.out, done: make(chan nodeDone, 1)}
	n.job = nj
	n.mu.Unlock()
	msg := map[string]any{"id": nj.id, "code": j.code}
	if j.cwd != "" {
		msg["cwd"] = j.cwd
	}
	if len(j.env) > 0 {
		kv := map[string]string{}
		for _, e := range j.env {
			k, v, _ := strings.Cut(e, "=")
			kv[k] = v
		}
		msg["env"] = kv
	}
	b, _ := json.Marshal(msg)
	go func() {
		defer close(p.done)
		defer func() {
			n.mu.Lock()
			n.job = nil
			n.mu.Unlock()
		}()
		n.wmu.Lock()
		_, werr := n.ctl.Write(append(b, '\n'))
		n.wmu.Unlock()
		if werr != nil {
			<-n.proc.done
		}
		select {
		case d := <-nj.done:
			n.count++
			p.outcome.count = n.count
			p.outcome.err = d.err
			if d.value != nil {
				j.out.rich(wire.OutputResult, "text/plain", []byte(*d.value))
			}
		case <-n.proc.done:
			// The driver's last messages may still be in the socket.
			select {
			case <-n.eof:
			case <-time.After(200 * time.Millisecond):
			}
			p.outcome.died = true
		}
	}()
	return p
}

func (n *nodeInterp) interrupt()              { n.proc.signal(syscall.SIGINT) }
func (n *nodeInterp) kill(why string)         { n.proc.kill(why) }
func (n *nodeInterp) exited() <-chan struct{} { return n.proc.done }
func (n *nodeInterp) death() death            { <-n.proc.done; return n.proc.d }
