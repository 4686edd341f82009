package session

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// maxDriverLine bounds one message from a driver (a representation of
// driver.py's MAX_REPR in base64, with room to spare).
const maxDriverLine = 10 << 20

// syncWait bounds how long a finished job waits for the markers on the
// driver's own stdout and stderr (what child processes wrote there before
// the job ended is passed on first).
const syncWait = 2 * time.Second

// driverInterp is an interpreter driver (driver.py, driver.js): a process
// that runs the code of one job at a time and talks to the agent over a
// socket pair on its fd 3, one JSON object per line.
type driverInterp struct {
	what string // "Python", "Node.js": for messages
	proc *process
	ctl  net.Conn
	eof  chan struct{} // closed when the driver's messages end

	wmu sync.Mutex // serialises writes to ctl

	mu     sync.Mutex
	job    *driverJob
	seq    int
	count  int
	scan   [2]syncScan   // the driver's own stdout, stderr
	synced chan struct{} // a marker passed (buffered 1)
}

type driverJob struct {
	id   int
	out  *output
	done chan driverDone
}

// driverMsg is a message from a driver.
type driverMsg struct {
	T     string                     `json:"t"`
	N     string                     `json:"n"`
	S     *string                    `json:"s"`
	B     string                     `json:"b"`
	Mime  string                     `json:"mime"`
	Kind  string                     `json:"kind"`
	Data  map[string]json.RawMessage `json:"data"`
	Size  int64                      `json:"size"`
	ID    int                        `json:"id"`
	Count int                        `json:"count"`
	Sync  int                        `json:"sync"`
	Exit  bool                       `json:"exit"`
	Value *string                    `json:"value"`
	Error *struct {
		Name, Message, Stack string
	} `json:"error"`
}

type driverDone struct {
	value *string
	count int
	sync  int
	exit  bool // the driver ends after this job
	err   *wire.SessionError
}

// startDriver starts argv with the control socket on fd 3 and waits for
// the driver's ready message.
func startDriver(ctx context.Context, m *Manager, what string, argv, env []string, cwd string, cred *syscall.Credential) (*driverInterp, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parent, child := os.NewFile(uintptr(fds[0]), "driver-ctl"), os.NewFile(uintptr(fds[1]), "driver-ctl-child")
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
	d := &driverInterp{what: what, proc: p, ctl: conn, eof: make(chan struct{}), synced: make(chan struct{}, 1)}
	p.mu.Lock()
	p.forward = d.forward
	p.mu.Unlock()
	ready := make(chan struct{})
	go d.read(m, ready)
	go func() {
		<-p.done
		conn.Close()
	}()
	select {
	case <-ready:
		return d, nil
	case <-p.done:
		return nil, &startError{msg: fmt.Sprintf("the %s driver exited during start (%s)", what, p.d.reason), tail: p.d.tail}
	case <-ctx.Done():
		p.kill("failed start")
		return nil, fmt.Errorf("the %s driver did not start in time: %w", what, ctx.Err())
	}
}

// startError is a driver that ended before it was ready, with its own
// last output.
type startError struct{ msg, tail string }

func (e *startError) Error() string {
	if e.tail == "" {
		return e.msg
	}
	return e.msg + "; its output:\n" + clipText(e.tail, 2048)
}

// lastTail is the output of a driver that failed to start ("" if err is
// not that).
func lastTail(err error) string {
	var se *startError
	if errors.As(err, &se) {
		return se.tail
	}
	return ""
}

// forward passes the driver process's own output (child processes that
// inherited its stdout, native code) to the running job, less the sync
// markers, which it notes.
func (d *driverInterp) forward(stderr bool, p []byte) {
	i := 0
	if stderr {
		i = 1
	}
	d.mu.Lock()
	pass, mark := d.scan[i].feed(p)
	j := d.job
	d.mu.Unlock()
	if j != nil {
		j.out.stream(stderr, pass)
	}
	if mark > 0 {
		// Only now, with what came before it passed on, may the job end.
		d.mu.Lock()
		d.scan[i].last = max(d.scan[i].last, mark)
		d.mu.Unlock()
		select {
		case d.synced <- struct{}{}:
		default:
		}
	}
}

// read handles the driver's messages until its socket ends; a message
// that does not parse ends the driver.
func (d *driverInterp) read(m *Manager, ready chan struct{}) {
	defer close(d.eof)
	sc := bufio.NewScanner(d.ctl)
	sc.Buffer(make([]byte, 64<<10), maxDriverLine)
	for sc.Scan() {
		var msg driverMsg
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			m.log.Warn("bad message from an interpreter driver", "driver", d.what, "err", err)
			d.proc.kill(fmt.Sprintf("the %s driver sent a message the agent cannot read", d.what))
			return
		}
		d.mu.Lock()
		j := d.job
		d.mu.Unlock()
		switch msg.T {
		case "ready":
			if ready != nil {
				close(ready)
				ready = nil
			}
		case "out":
			if j == nil {
				continue
			}
			if msg.S != nil {
				j.out.stream(msg.N == "stderr", []byte(*msg.S))
			} else if b, err := base64.StdEncoding.DecodeString(msg.B); err == nil {
				j.out.stream(msg.N == "stderr", b)
			}
		case "display":
			if b, err := base64.StdEncoding.DecodeString(msg.B); err == nil && j != nil && msg.Mime != "" {
				j.out.rich(wire.OutputDisplay, msg.Mime, b)
			}
		case "bundle":
			if j != nil {
				kind := wire.OutputDisplay
				if msg.Kind == "result" {
					kind = wire.OutputResult
				}
				bundle(j.out, kind, msg.Data)
			}
		case "dropped":
			if j != nil {
				j.out.dropped(msg.Mime)
			}
		case "done":
			if j == nil || msg.ID != j.id {
				continue
			}
			dd := driverDone{value: msg.Value, count: msg.Count, sync: msg.Sync, exit: msg.Exit}
			if msg.Error != nil {
				dd.err = &wire.SessionError{Name: msg.Error.Name, Message: clipText(msg.Error.Message, 16<<10),
					Traceback: clipText(stripANSI(msg.Error.Stack), maxTraceback)}
			}
			select {
			case j.done <- dd:
			default: // a second "done" (code can write to fd 3 itself): not waited for
			}
		}
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		d.proc.kill(fmt.Sprintf("the %s driver sent a message over the size limit", d.what))
	}
}

func (d *driverInterp) run(j *job) *pending {
	p := &pending{done: make(chan struct{})}
	d.mu.Lock()
	d.seq++
	dj := &driverJob{id: d.seq, out: j.out, done: make(chan driverDone, 1)}
	d.job = dj
	d.mu.Unlock()
	msg := map[string]any{"id": dj.id, "code": j.code}
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
			d.mu.Lock()
			d.job = nil
			d.mu.Unlock()
		}()
		d.wmu.Lock()
		_, werr := d.ctl.Write(append(b, '\n'))
		d.wmu.Unlock()
		if werr != nil {
			<-d.proc.done
		}
		select {
		case dd := <-dj.done:
			d.awaitSync(dj.id, dd.sync)
			if dd.exit {
				// The next call must find it gone, not send to it.
				select {
				case <-d.proc.done:
				case <-time.After(5 * time.Second):
					d.proc.kill("exit() was called, and the interpreter did not end")
				}
			}
			d.count++
			if dd.count > 0 {
				d.count = dd.count
			}
			p.outcome.count = d.count
			p.outcome.err = dd.err
			if dd.value != nil {
				j.out.rich(wire.OutputResult, "text/plain", []byte(*dd.value))
			}
		case <-d.proc.done:
			// The driver's last messages may still be in the socket.
			select {
			case <-d.eof:
			case <-time.After(200 * time.Millisecond):
			}
			p.outcome.died = true
		}
	}()
	return p
}

// awaitSync waits until the markers of job id passed on the driver's
// stdout (bit 1) and stderr (bit 2), so all they carried before the job
// ended went to it.
func (d *driverInterp) awaitSync(id, bits int) {
	if bits == 0 {
		return
	}
	var timeout <-chan time.Time
	for {
		d.mu.Lock()
		ok := (bits&1 == 0 || d.scan[0].last >= id) && (bits&2 == 0 || d.scan[1].last >= id)
		d.mu.Unlock()
		if ok {
			return
		}
		if timeout == nil {
			t := time.NewTimer(syncWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-d.synced:
		case <-timeout:
			return
		case <-d.proc.done:
			return
		}
	}
}

func (d *driverInterp) interrupt()              { d.proc.signal(syscall.SIGINT) }
func (d *driverInterp) kill(why string)         { d.proc.kill(why) }
func (d *driverInterp) exited() <-chan struct{} { return d.proc.done }
func (d *driverInterp) death() death            { <-d.proc.done; return d.proc.d }

// syncPrefix begins a driver's sync marker: syncPrefix, the job id in
// decimal, NUL.
const syncPrefix = "\x00boxlite-sync "

// syncMarkRE finds whole markers (in a dead driver's last output).
var syncMarkRE = regexp.MustCompile(`\x00boxlite-sync [0-9]+\x00`)

// syncScan takes the sync markers out of one of a driver's own streams.
type syncScan struct {
	held []byte // the stream's tail that may begin a marker
	last int    // the id of the last marker whose preceding bytes were passed on
}

// feed returns what of b (after what was held) to pass on, and the
// highest id of the markers in it (0: none); the caller records it in
// last once it passed the bytes on. Bytes that may begin a marker are held
// until the rest shows whether they do.
func (s *syncScan) feed(b []byte) (pass []byte, mark int) {
	data := b
	if len(s.held) > 0 {
		data = append(s.held, b...)
		s.held = nil
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			return append(pass, data...), mark
		}
		pass = append(pass, data[:i]...)
		rest := data[i:]
		n := min(len(rest), len(syncPrefix))
		if string(rest[:n]) != syncPrefix[:n] {
			pass = append(pass, 0)
			data = rest[1:]
			continue
		}
		if n < len(syncPrefix) {
			s.held = append([]byte(nil), rest...)
			return pass, mark
		}
		end := bytes.IndexByte(rest[len(syncPrefix):], 0)
		if end < 0 {
			if len(rest) > len(syncPrefix)+12 {
				pass = append(pass, 0)
				data = rest[1:]
				continue
			}
			s.held = append([]byte(nil), rest...)
			return pass, mark
		}
		id, err := strconv.Atoi(string(rest[len(syncPrefix) : len(syncPrefix)+end]))
		if err != nil || id <= 0 {
			pass = append(pass, 0)
			data = rest[1:]
			continue
		}
		mark = max(mark, id)
		data = rest[len(syncPrefix)+end+1:]
	}
	return pass, mark
}
