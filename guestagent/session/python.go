package session

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// pyKernel is an ipykernel driven over ZeroMQ. The kernel binds its
// sockets as unix sockets (transport ipc) in a directory of its own, so no
// port can collide and no network is needed; the agent connects the shell
// (DEALER) and IOPub (SUB) channels. The others are not needed: input() is
// refused (allow_stdin false), interrupts are SIGINT (ipykernel's
// interrupt_mode is "signal"), shutdown is a kill (the state is discarded
// anyway), and the agent, the kernel's parent, sees its death directly
// rather than through heartbeats.
type pyKernel struct {
	m     *Manager
	proc  *process
	dir   string
	sig   *signer
	shell zmq4.Socket
	iopub zmq4.Socket
	stop  context.CancelFunc // closes the sockets' context

	mu     sync.Mutex
	active *route
}

// route passes the messages answering one request to the job waiting on it.
type route struct {
	id   string
	ch   chan routed
	stop chan struct{} // closed when the job stops listening
	once sync.Once
}

type routed struct {
	shell bool
	msg   *jmsg
}

// Sockets of a kernel, as ports of its ipc base path.
const (
	portShell = 1 + iota
	portIOPub
	portStdin
	portControl
	portHB
)

// pyLauncher is ipykernel_launcher without the debugger: importing debugpy
// is a quarter of the kernel's start (seconds under emulation) and a
// session has no debugger client. The code may still import debugpy.
//
// It also trims what a call costs, since the agent is the kernel's only
// client (see pyQuick).
const pyLauncher = `import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
sys.modules["debugpy"] = None
try:
    from ipykernel import kernelapp
finally:
    del sys.modules["debugpy"]
` + pyQuick + `
kernelapp.launch_new_instance()
`

// pyQuick makes a call cheaper without changing what it returns. Each
// sys.stdout/sys.stderr flush of ipykernel (six per execute_request) is a
// round trip to its IOPub thread, even with nothing written: a flush with
// nothing written since the last one returns at once (IOPub messages keep
// their order: they all go through that thread). execute_input is not
// published (the agent ignores it; it is one more IOPub message per
// call). Any of it that does not fit the installed ipykernel is left out.
// (The 0.5 ms sleep before each execute_reply, there so that clients which
// stop at the reply get the output, is switched off on the command line:
// the agent waits for IOPub's idle, which comes after all the output.)
const pyQuick = `def _boxlite_quick():
    try:
        from ipykernel import iostream, kernelbase
        flush = iostream.OutStream.flush
        def quick_flush(self):
            try:
                with self._buffer_lock:
                    idle = not (self._flush_pending or self._subprocess_flush_pending) and self._buffer.tell() == 0
            except Exception:
                idle = False
            if not idle:
                flush(self)
        iostream.OutStream.flush = quick_flush
        if hasattr(kernelbase.Kernel, "_publish_execute_input"):
            kernelbase.Kernel._publish_execute_input = lambda self, code, parent, count: None
    except Exception:
        pass
_boxlite_quick()
del _boxlite_quick`

var errNoIPyKernel = errors.New("python3-ipykernel is not installed in this box's image: rebuild the image (boxlite-mcp image build) or run with fresh: true")

func startPython(ctx context.Context, m *Manager, k key, env []string, cwd string, cred *syscall.Credential) (interp, error) {
	// Kernels of the box's user reach their own directory, nothing else.
	if err := os.MkdirAll(m.cfg.Dir, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(m.cfg.Dir, 0o711); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(m.cfg.Dir, "py-"+k.name+"-")
	if err != nil {
		return nil, err
	}
	sig := &signer{key: []byte(newID() + newID()), session: newID()}
	conn := map[string]any{
		"transport": "ipc", "ip": filepath.Join(dir, "k"),
		"shell_port": portShell, "iopub_port": portIOPub, "stdin_port": portStdin, "control_port": portControl, "hb_port": portHB,
		"key": string(sig.key), "signature_scheme": "hmac-sha256", "kernel_name": "python3",
	}
	connFile := filepath.Join(dir, "connection.json")
	b, _ := json.Marshal(conn)
	if err := os.WriteFile(connFile, b, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		// The kernel reads the file and makes its sockets in dir. The
		// directory is handed over last: until then the box's user cannot
		// plant anything in it for the agent to write through.
		for _, p := range []string{connFile, dir} {
			if err := os.Lchown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
	}
	env = mergeEnv([]string{
		// matplotlib draws into PNGs sent at the end of each call (and on
		// plt.show()); ipykernel sets the same default.
		"MPLBACKEND=module://matplotlib_inline.backend_inline",
		// debugpy's start-up warning about frozen modules.
		"PYDEVD_DISABLE_FILE_VALIDATION=1",
	}, env)
	argv := []string{m.cfg.Python, "-Xfrozen_modules=off", "-c", pyLauncher, "-f", connFile,
		"--HistoryManager.hist_file=:memory:", "--Kernel._execute_sleep=0"}
	p, err := m.startProcess(argv, env, cwd, nil, cred)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	kp := &pyKernel{m: m, proc: p, dir: dir, sig: sig}
	go func() {
		<-p.done
		kp.close()
	}()
	if err := kp.connect(ctx); err != nil {
		p.kill("failed start")
		if strings.Contains(p.d.tail, "No module named") && strings.Contains(p.d.tail, "ipykernel") {
			return nil, wire.Errorf(wire.CodeNotFound, "%v", errNoIPyKernel)
		}
		if p.d.tail != "" {
			err = fmt.Errorf("%w; its output:\n%s", err, clipText(p.d.tail, 2048))
		}
		return nil, err
	}
	return kp, nil
}

// connect waits for the kernel's sockets, connects, and waits until the
// kernel answers on both channels (a SUB socket misses what is published
// before it is connected, so a request is repeated until its status
// messages arrive).
func (k *pyKernel) connect(ctx context.Context) error {
	base := filepath.Join(k.dir, "k")
	for {
		_, e1 := os.Stat(fmt.Sprintf("%s-%d", base, portShell))
		_, e2 := os.Stat(fmt.Sprintf("%s-%d", base, portIOPub))
		if e1 == nil && e2 == nil {
			break
		}
		select {
		case <-k.proc.done:
			return fmt.Errorf("the Python kernel exited during start (%s)", k.proc.d.reason)
		case <-ctx.Done():
			return fmt.Errorf("the Python kernel did not start in time: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	sctx, stop := context.WithCancel(context.Background())
	quiet := zmq4.WithLogger(log.New(io.Discard, "", 0))
	k.mu.Lock()
	k.stop = stop
	k.shell = zmq4.NewDealer(sctx, quiet, zmq4.WithDialerMaxRetries(40), zmq4.WithTimeout(30*time.Second))
	k.iopub = zmq4.NewSub(sctx, quiet, zmq4.WithDialerMaxRetries(40))
	k.mu.Unlock()
	select {
	case <-k.proc.done: // close ran before the sockets existed
		k.close()
		return fmt.Errorf("the Python kernel exited during start (%s)", k.proc.d.reason)
	default:
	}
	if err := k.iopub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return err
	}
	if err := k.shell.Dial(fmt.Sprintf("%s://%s-%d", zmtpScheme, base, portShell)); err != nil {
		return err
	}
	if err := k.iopub.Dial(fmt.Sprintf("%s://%s-%d", zmtpScheme, base, portIOPub)); err != nil {
		return err
	}
	go k.read(k.shell, true)
	go k.read(k.iopub, false)
	for {
		ok, err := k.ping(ctx)
		if err != nil || ok {
			return err
		}
	}
}

// ping sends a kernel_info_request and reports whether both its reply and
// an IOPub status message for it arrived.
func (k *pyKernel) ping(ctx context.Context) (bool, error) {
	frames, id, err := k.sig.encode("kernel_info_request", map[string]any{})
	if err != nil {
		return false, err
	}
	r := k.listen(id)
	defer k.unlisten(r)
	if err := k.shell.SendMulti(zmq4.NewMsgFrom(frames...)); err != nil {
		return false, err
	}
	reply, status := false, false
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	for !(reply && status) {
		select {
		case rm := <-r.ch:
			if rm.shell {
				reply = true
			} else {
				status = true
			}
		case <-t.C:
			if reply {
				return false, nil // IOPub missed it: ask again
			}
		case <-k.proc.done:
			return false, fmt.Errorf("the Python kernel exited during start (%s)", k.proc.d.reason)
		case <-ctx.Done():
			return false, fmt.Errorf("the Python kernel did not answer in time: %w", ctx.Err())
		}
	}
	return true, nil
}

// read passes each message of sock to the job listening for it.
func (k *pyKernel) read(sock zmq4.Socket, shell bool) {
	for {
		msg, err := sock.Recv()
		if err != nil {
			return
		}
		m, err := k.sig.decode(msg.Frames)
		if err != nil {
			k.m.log.Debug("dropping a kernel message", "err", err)
			continue
		}
		k.mu.Lock()
		r := k.active
		k.mu.Unlock()
		if r == nil || m.Parent.MsgID != r.id {
			continue
		}
		select {
		case r.ch <- routed{shell: shell, msg: m}:
		case <-r.stop:
		}
	}
}

func (k *pyKernel) listen(id string) *route {
	r := &route{id: id, ch: make(chan routed, 256), stop: make(chan struct{})}
	k.mu.Lock()
	k.active = r
	k.mu.Unlock()
	return r
}

func (k *pyKernel) unlisten(r *route) {
	k.mu.Lock()
	if k.active == r {
		k.active = nil
	}
	k.mu.Unlock()
	r.once.Do(func() { close(r.stop) })
}

// close ends the sockets and removes the kernel's directory (once the
// process is gone).
func (k *pyKernel) close() {
	k.mu.Lock()
	stop, shell, iopub := k.stop, k.shell, k.iopub
	k.stop, k.shell, k.iopub = nil, nil, nil
	k.mu.Unlock()
	if stop != nil {
		stop()
		shell.Close()
		iopub.Close()
	}
	os.RemoveAll(k.dir)
}

func (k *pyKernel) run(j *job) *pending {
	p := &pending{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if j.cwd != "" || len(j.env) > 0 {
			if o := k.execute(setupCode(j.cwd, j.env), true, j.out); o.err != nil || o.died {
				p.outcome = o
				return
			}
		}
		p.outcome = k.execute(j.code, false, j.out)
	}()
	return p
}

// setupCode changes the kernel's working directory and environment.
func setupCode(cwd string, env []string) string {
	var b strings.Builder
	b.WriteString("import os as __boxlite_os\n")
	if cwd != "" {
		q, _ := json.Marshal(cwd) // a JSON string is a Python string literal
		fmt.Fprintf(&b, "__boxlite_os.chdir(%s)\n", q)
	}
	if len(env) > 0 {
		kv := map[string]string{}
		for _, e := range env {
			k, v, _ := strings.Cut(e, "=")
			kv[k] = v
		}
		q, _ := json.Marshal(kv)
		fmt.Fprintf(&b, "__boxlite_os.environ.update(%s)\n", q)
	}
	b.WriteString("del __boxlite_os\n")
	return b.String()
}

// maxTraceback caps an error's traceback text.
const maxTraceback = 64 << 10

// execute runs code and passes what it produces to out until the kernel
// has replied and gone idle, or died.
func (k *pyKernel) execute(code string, silent bool, out *output) (o outcome) {
	// stop_on_error would make ipykernel abort the requests that arrive
	// just after an exception (the next call, here: calls are serialised,
	// so there is never a queue worth aborting).
	frames, id, err := k.sig.encode("execute_request", executeRequest{Code: code, Silent: silent, StoreHistory: !silent,
		UserExpressions: map[string]any{}, AllowStdin: false, StopOnError: false})
	if err != nil {
		o.err = &wire.SessionError{Name: "AgentError", Message: err.Error()}
		return o
	}
	r := k.listen(id)
	defer k.unlisten(r)
	k.mu.Lock()
	shell := k.shell
	k.mu.Unlock()
	if shell == nil || shell.SendMulti(zmq4.NewMsgFrom(frames...)) != nil {
		<-k.proc.done
		o.died = true
		return o
	}
	reply, idle := false, false
	handle := func(rm routed) {
		switch rm.msg.Header.MsgType {
		case "execute_reply":
			reply = true
			var c executeReply
			json.Unmarshal(rm.msg.Content, &c)
			o.count = c.ExecutionCount
			if c.Status == "aborted" && o.err == nil {
				o.err = &wire.SessionError{Name: "Aborted", Message: "the kernel aborted the execution"}
			}
		case "status":
			var c statusContent
			json.Unmarshal(rm.msg.Content, &c)
			idle = idle || c.ExecutionState == "idle"
		case "stream":
			var c streamContent
			json.Unmarshal(rm.msg.Content, &c)
			out.stream(c.Name == "stderr", []byte(c.Text))
		case "display_data", "update_display_data":
			bundle(out, wire.OutputDisplay, rm.msg.Content)
		case "execute_result":
			bundle(out, wire.OutputResult, rm.msg.Content)
		case "error":
			var c errorContent
			json.Unmarshal(rm.msg.Content, &c)
			o.err = &wire.SessionError{Name: c.Ename, Message: clipText(c.Evalue, 16<<10),
				Traceback: clipText(stripANSI(strings.Join(c.Traceback, "\n")), maxTraceback)}
		}
	}
	died := k.proc.done
	var drained <-chan time.Time
	for !(reply && idle) {
		select {
		case rm := <-r.ch:
			handle(rm)
		case <-died:
			// What the kernel sent before dying may still be on its way.
			died, o.died = nil, true
			drained = time.After(200 * time.Millisecond)
		case <-drained:
			for {
				select {
				case rm := <-r.ch:
					handle(rm)
				default:
					return o
				}
			}
		}
	}
	return o
}

// bundle passes a mime bundle's representations to out: text/plain alone
// when it is the only one, else every other one (in mime order); a
// result's text/plain always goes (it is the call's result).
func bundle(out *output, kind string, content json.RawMessage) {
	var c displayContent
	if json.Unmarshal(content, &c) != nil {
		return
	}
	mimes := make([]string, 0, len(c.Data))
	for mime := range c.Data {
		if mime != "text/plain" {
			mimes = append(mimes, mime)
		}
	}
	sort.Strings(mimes)
	if _, ok := c.Data["text/plain"]; ok && (len(mimes) == 0 || kind == wire.OutputResult) {
		mimes = append([]string{"text/plain"}, mimes...)
	}
	for _, mime := range mimes {
		if data, ok := mimeData(mime, c.Data[mime]); ok {
			out.rich(kind, mime, data)
		}
	}
}

func (k *pyKernel) interrupt()              { k.proc.signal(syscall.SIGINT) }
func (k *pyKernel) kill(why string)         { k.proc.kill(why) }
func (k *pyKernel) exited() <-chan struct{} { return k.proc.done }
func (k *pyKernel) death() death            { <-k.proc.done; return k.proc.d }

func decodeBase64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' {
			return -1
		}
		return r
	}, s))
}
