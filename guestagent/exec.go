package guestagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// pipeGrace is how long an exec's output may stay idle, after its process
// exited or was killed, before the agent stops reading it (a background
// child holding stdout open) and answers. It runs from the last byte read,
// not from the exit, so output the host is slow to take is never cut off.
const pipeGrace = 500 * time.Millisecond

// PipeGrace is pipeGrace, for tests.
const PipeGrace = pipeGrace

// outputPipe carries one output stream of a process to w.
type outputPipe struct {
	r      *os.File
	exited atomic.Bool
	done   chan struct{}
}

// newOutputPipe returns the pipe and the write end to give the process.
func newOutputPipe(w io.Writer) (*outputPipe, *os.File, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	p := &outputPipe{r: r, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				if p.exited.Load() {
					r.SetReadDeadline(time.Now().Add(pipeGrace))
				}
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && pending(r) > 0 {
				// The reader was slow (a busy host, a starved agent), not
				// the pipe idle: what is there is still read.
				r.SetReadDeadline(time.Now().Add(pipeGrace))
				continue
			}
			if err != nil {
				return // EOF, or idle past the grace after the exit
			}
		}
	}()
	return p, wr, nil
}

// pending is how many bytes wait in the pipe r (FIONREAD, alias TIOCINQ).
func pending(r *os.File) int {
	rc, err := r.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	return n
}

// finish is called once the process has exited: it reads on until EOF or
// pipeGrace without a byte, then closes the pipe.
func (p *outputPipe) finish() {
	p.exited.Store(true)
	p.r.SetReadDeadline(time.Now().Add(pipeGrace))
	<-p.done
	p.r.Close()
}

// abandon closes a pipe whose process never started.
func (p *outputPipe) abandon() {
	p.r.Close()
	<-p.done
}

// Why an exec was stopped early.
var (
	errTimedOut  = errors.New("timed out")
	errCancelled = errors.New("cancelled by host")
	errHostGone  = errors.New("host went away")
)

// baseEnv is the environment every exec starts from: defaults, overridden by
// the agent's own environment (which engines set to the box's environment).
func baseEnv() []string {
	return mergeEnv(wire.BaseEnv(), os.Environ())
}

// mergeEnv returns base with extra's entries added, later keys winning.
func mergeEnv(base, extra []string) []string {
	idx := map[string]int{}
	out := make([]string, 0, len(base)+len(extra))
	for _, kv := range append(append([]string{}, base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// lookPath finds file in env's PATH (not the agent's own).
func lookPath(file string, env []string) (string, *wire.Error) {
	if strings.Contains(file, "/") {
		fi, err := os.Stat(file)
		switch {
		case err != nil:
			return "", wire.Errorf(wire.CodeNotFound, "executable %q not found", file)
		case fi.IsDir():
			return "", wire.Errorf(wire.CodeIsDir, "%q is a directory, not an executable", file)
		case fi.Mode()&0o111 == 0:
			return "", wire.Errorf(wire.CodePermission, "%q is not executable", file)
		}
		return file, nil
	}
	path := wire.DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", wire.Errorf(wire.CodeNotFound, "executable %q not found in PATH (%s)", file, path)
}

// outBudget is the output cap shared by stdout and stderr of one exec.
type outBudget struct {
	left      atomic.Int64
	truncated atomic.Bool
}

// frameWriter sends what the process writes as frames of one type. Past the
// budget it drops bytes (still reading them, so the process never blocks on
// a full pipe). A failed send means the host is gone: it calls gone once and
// keeps draining.
type frameWriter struct {
	c      *call
	t      wire.FrameType
	budget *outBudget
	total  atomic.Int64
	gone   func()
	failed atomic.Bool
}

func (w *frameWriter) Write(p []byte) (int, error) {
	w.total.Add(int64(len(p)))
	if w.failed.Load() {
		return len(p), nil
	}
	send := p
	if left := w.budget.left.Add(-int64(len(p))); left < 0 {
		keep := max(int64(len(p))+left, 0)
		send = p[:keep]
		w.budget.truncated.Store(true)
	}
	for len(send) > 0 {
		n := min(len(send), wire.ChunkSize)
		if err := w.c.write(w.t, send[:n]); err != nil {
			w.failed.Store(true)
			w.gone()
			break
		}
		send = send[n:]
	}
	return len(p), nil
}

// exec runs one program and streams its output; see wire.ExecRequest.
func (s *Server) exec(ctx context.Context, c *call, req *wire.ExecRequest) error {
	env := mergeEnv(baseEnv(), req.Env)
	path, werr := lookPath(req.Argv[0], env)
	if werr != nil {
		return c.fail(werr)
	}
	if req.Cwd != "" {
		if fi, err := os.Stat(req.Cwd); err != nil {
			return c.fail(fileError(err, req.Cwd))
		} else if !fi.IsDir() {
			return c.fail(wire.Errorf(wire.CodeNotDir, "working directory %q is not a directory", req.Cwd))
		}
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if req.TimeoutMs > 0 {
		var stop context.CancelFunc
		runCtx, stop = context.WithTimeoutCause(runCtx, time.Duration(req.TimeoutMs)*time.Millisecond, errTimedOut)
		defer stop()
	}

	cmd := exec.CommandContext(runCtx, path)
	cmd.Args = req.Argv
	cmd.Env = env
	cmd.Dir = req.Cwd
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if req.UID != nil || req.GID != nil {
		cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), NoSetGroups: req.UID == nil}
		if req.UID != nil {
			cred.Uid = *req.UID
		}
		if req.GID != nil {
			cred.Gid = *req.GID
		}
		cmd.SysProcAttr.Credential = cred
	}
	// Kill the whole process group, so grandchildren die with the shell.
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	// Output is read by outputPipe (never cut off while it flows); the only
	// copier os/exec runs is stdin's, which must not hold Wait up when the
	// process ended without reading what the host still streams.
	cmd.WaitDelay = pipeGrace

	limit := s.cfg.OutputLimit
	if req.OutputLimit > 0 {
		limit = min(limit, req.OutputLimit)
	}
	budget := &outBudget{}
	budget.left.Store(limit)
	hostGone := func() { cancel(errHostGone) }
	stdout := &frameWriter{c: c, t: wire.FrameStdout, budget: budget, gone: hostGone}
	stderr := &frameWriter{c: c, t: wire.FrameStderr, budget: budget, gone: hostGone}
	outPipe, outW, err := newOutputPipe(stdout)
	if err != nil {
		return c.fail(wire.Errorf(wire.CodeExhausted, "cannot make a pipe: %v", err))
	}
	errPipe, errW, err := newOutputPipe(stderr)
	if err != nil {
		outW.Close()
		outPipe.abandon()
		return c.fail(wire.Errorf(wire.CodeExhausted, "cannot make a pipe: %v", err))
	}
	cmd.Stdout, cmd.Stderr = outW, errW

	var stdinW *io.PipeWriter
	switch {
	case req.StdinStream:
		var pr *io.PipeReader
		pr, stdinW = io.Pipe()
		cmd.Stdin = pr
	case len(req.Stdin) > 0:
		cmd.Stdin = bytes.NewReader(req.Stdin)
	}

	start := time.Now()
	err = s.cfg.Work.start(cmd)
	outW.Close() // the process has its own copies now
	errW.Close()
	if err != nil {
		outPipe.abandon()
		errPipe.abandon()
		if stdinW != nil {
			stdinW.Close()
		}
		return c.fail(startError(err, req))
	}

	// Host → agent frames: stdin, EOF, cancel. A read error means the host
	// closed the stream or the connection died: kill the work.
	go func() {
		stdinOpen := stdinW != nil
		defer func() {
			if stdinOpen {
				stdinW.Close()
			}
		}()
		for {
			f, err := c.r.ReadFrame()
			if err != nil {
				cancel(errHostGone)
				return
			}
			switch f.Type {
			case wire.FrameStdin:
				if stdinOpen {
					if _, err := stdinW.Write(f.Payload); err != nil {
						stdinOpen = false // the process closed its stdin; drop the rest
					}
				}
			case wire.FrameEOF:
				if stdinOpen {
					stdinW.Close()
					stdinOpen = false
				}
			case wire.FrameCancel:
				cancel(errCancelled)
			}
		}
	}()

	waitErr := cmd.Wait()
	untrack(cmd.Process.Pid)
	outPipe.finish()
	errPipe.finish()
	res := &wire.ExecResult{
		ExitCode:    -1,
		Truncated:   budget.truncated.Load(),
		StdoutBytes: stdout.total.Load(),
		StderrBytes: stderr.total.Load(),
		DurationMs:  time.Since(start).Milliseconds(),
	}
	if ps := cmd.ProcessState; ps != nil {
		ws := ps.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			res.Signal = unix.SignalName(ws.Signal())
		} else {
			res.ExitCode = ws.ExitStatus()
		}
	}
	switch cause := context.Cause(runCtx); {
	case errors.Is(cause, errTimedOut):
		res.TimedOut = true
	case errors.Is(cause, errCancelled):
		res.Cancelled = true
	case errors.Is(cause, errHostGone):
		return fmt.Errorf("exec %s: %w", req.Argv[0], errHostGone)
	}
	// A background child kept the pipes open after the process ended; the
	// agent closed them after pipeGrace. That is not a failure of the call.
	if waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay) {
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			return c.fail(wire.Errorf(wire.CodeInternal, "wait: %v", waitErr))
		}
	}
	return c.result(&wire.Result{Exec: res})
}

// killGroup sends SIGKILL to the process group led by pid, again and
// again for a moment: members forking while the first signal lands (a fork
// bomb) may add children that missed it.
func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	for i := 0; i < 50; i++ {
		time.Sleep(2 * time.Millisecond)
		if errors.Is(syscall.Kill(-pid, syscall.SIGKILL), syscall.ESRCH) {
			break
		}
	}
	return err
}

// startError turns a failed cmd.Start into a clear agent error.
func startError(err error, req *wire.ExecRequest) *wire.Error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "chdir" {
		return fileError(pe.Err, req.Cwd)
	}
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return wire.Errorf(wire.CodePermission, "cannot execute %q: permission denied", req.Argv[0])
	case errors.Is(err, syscall.ENOENT):
		return wire.Errorf(wire.CodeNotFound, "cannot execute %q: %v (missing interpreter?)", req.Argv[0], err)
	case errors.Is(err, syscall.EAGAIN):
		return wire.Errorf(wire.CodeExhausted, "cannot start %q: the box is at its process limit; wait for processes to end or kill some", req.Argv[0])
	case errors.Is(err, syscall.ENOEXEC):
		return wire.Errorf(wire.CodeInvalid, "cannot execute %q: not an executable format", req.Argv[0])
	}
	return wire.Errorf(wire.CodeInternal, "cannot execute %q: %v", req.Argv[0], err)
}

// fileError classifies a filesystem error about path.
func fileError(err error, path string) *wire.Error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return wire.Errorf(wire.CodeNotFound, "%s: no such file or directory", path)
	case errors.Is(err, fs.ErrPermission):
		return wire.Errorf(wire.CodePermission, "%s: permission denied", path)
	case errors.Is(err, syscall.EISDIR):
		return wire.Errorf(wire.CodeIsDir, "%s: is a directory", path)
	case errors.Is(err, syscall.ENOTDIR):
		return wire.Errorf(wire.CodeNotDir, "%s: not a directory (or a parent is not)", path)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return wire.Errorf(wire.CodeNoSpace, "%s: no space left on device", path)
	case errors.Is(err, syscall.EROFS):
		return wire.Errorf(wire.CodePermission, "%s: read-only file system", path)
	}
	return wire.Errorf(wire.CodeInternal, "%s: %v", path, err)
}
