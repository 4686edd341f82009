package session

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is an interpreter process: one goroutine waits for it and
// closes done; its own stdout and stderr (not the code's, which the
// interpreter captures) are kept as a short tail for error reports, and
// handed to forward when set.
type process struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{}

	mu       sync.Mutex
	tail     []byte
	killedBy string
	d        death // set before done is closed
	forward  func(stderr bool, p []byte)
}

const tailKeep = 4 << 10

// procWriter feeds one of the process's own streams to it.
type procWriter struct {
	p      *process
	stderr bool
}

func (w procWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	w.p.tail = append(w.p.tail, b...)
	if n := len(w.p.tail); n > tailKeep {
		w.p.tail = append(w.p.tail[:0], w.p.tail[n-tailKeep:]...)
	}
	fw := w.p.forward
	w.p.mu.Unlock()
	if fw != nil {
		fw(w.stderr, b)
	}
	return len(b), nil
}

// startProcess starts argv in its own process group, in the box's work
// cgroup (through m.cfg.Start), with extra files from fd 3 on, as cred
// (nil: the agent's user).
func (m *Manager) startProcess(argv, env []string, dir string, extra []*os.File, cred *syscall.Credential) (*process, error) {
	path, err := lookPath(argv[0], env)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env, cmd.Dir, cmd.ExtraFiles = env, dir, extra
	// No Pdeathsig: it fires when the forking OS thread ends, which the Go
	// runtime may do at any time; the agent is the box's first process, so
	// its interpreters end with it anyway.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.WaitDelay = time.Second
	p := &process{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = procWriter{p, false}, procWriter{p, true}
	if err := m.cfg.Start(cmd); err != nil {
		if errors.Is(err, syscall.EAGAIN) {
			return nil, fmt.Errorf("the box is at its process limit: %w", err)
		}
		return nil, err
	}
	p.pid = cmd.Process.Pid
	go p.wait(m)
	m.track(p)
	return p, nil
}

func (p *process) wait(m *Manager) {
	p.cmd.Wait()
	m.cfg.Reaped(p.pid)
	p.mu.Lock()
	d := death{code: -1, killedBy: p.killedBy, tail: strings.TrimSpace(string(bytes.ToValidUTF8(syncMarkRE.ReplaceAll(p.tail, nil), []byte("?"))))}
	p.mu.Unlock()
	if ps := p.cmd.ProcessState; ps != nil {
		ws := ps.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			d.signal = unix.SignalName(ws.Signal())
			d.reason = "the interpreter was killed by " + d.signal
			if ws.Signal() == syscall.SIGKILL {
				d.reason += " (out of memory?)"
			}
		default:
			d.code = ws.ExitStatus()
			d.reason = fmt.Sprintf("the interpreter exited with code %d", d.code)
		}
	}
	if d.killedBy != "" {
		d.reason = d.killedBy
	}
	p.d = d
	close(p.done)
}

// signal sends sig to the process's group, and to the process itself
// when it left the group (code can call setpgid): a signal to its old
// group would miss it.
func (p *process) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		syscall.Kill(-p.pid, sig)
		if pgid, err := syscall.Getpgid(p.pid); err == nil && pgid != p.pid {
			syscall.Kill(p.pid, sig)
		}
	}
}

// killWait bounds how long kill waits for the process to end (one stuck in
// the kernel may not, at once).
const killWait = 10 * time.Second

// kill SIGKILLs the process group and the process, recording why, and
// waits (up to killWait) for the exit.
func (p *process) kill(why string) {
	p.mu.Lock()
	if p.killedBy == "" {
		p.killedBy = why
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.pid, syscall.SIGKILL)
	syscall.Kill(p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(killWait):
	}
}

// lookPath finds file in env's PATH (not the agent's own).
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed in this box (not found in PATH %s)", file, path)
}

// oomKills reads the kernel's count of out-of-memory kills (0 when it
// cannot). In a VM it counts the box's kills; in a jail the host's, which
// is good enough to tell a likely cause.
func oomKills() int64 {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
