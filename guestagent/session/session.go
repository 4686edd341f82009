// Package session keeps the interpreter sessions of a box: persistent
// Python and JavaScript interpreters that run the code of many calls, so
// variables, imports, functions and the working directory survive between
// them. It runs inside the guest agent, the same for every engine.
//
// Python runs in IPython's InteractiveShell inside a small driver
// (driver.py), so IPython's display system and everything built on it
// (matplotlib's inline backend, pandas reprs, _repr_png_, magics) work as in
// Jupyter; JavaScript in a small Node driver (driver.js) keeping state in
// Node's global scope. Both speak one line-JSON protocol with the agent
// over a socket on their fd 3 (driver.go). ipykernel itself is not used:
// its ZeroMQ sockets, signed messages and IOPub thread cost several
// milliseconds per call, more than everything else on a warm call together.
//
// The Manager owns every session's lifecycle: it starts an interpreter on
// first use, serialises calls per session in arrival order, interrupts the
// running code on timeout and cancel (keeping its state; an interpreter the
// interrupt does not stop within InterruptGrace is killed), notices an
// interpreter that died and starts a new one on the next call, and shuts
// the least recently used idle session down when a box has MaxSessions. A
// Manager is safe for concurrent use.
package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// Config configures a Manager. Zero fields take defaults.
type Config struct {
	// MaxSessions is how many sessions a box keeps (default 8).
	MaxSessions int
	// InterruptGrace is how long an interrupt may take before the
	// interpreter is killed (default 5 s).
	InterruptGrace time.Duration
	// StartTimeout bounds an interpreter's start (default 2 min: Python
	// imports are slow under emulation).
	StartTimeout time.Duration
	// OutputLimit caps a call's stdout, stderr and text outputs together
	// when the request sets no lower limit (default 16 MiB).
	OutputLimit int64
	// Env returns the environment interpreters start with (default os.Environ).
	Env func() []string
	// Cwd is the working directory interpreters start in (default /root,
	// else /).
	Cwd string
	// Start starts an interpreter process (default cmd.Start); the agent
	// starts it in the box's work cgroup and tracks it for its reaper.
	Start func(*exec.Cmd) error
	// Reaped is called with the pid of an interpreter once it was waited for.
	Reaped func(pid int)
	// Python and Node are the interpreter commands (default python3, node).
	Python, Node string
	Logger       *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 8
	}
	if c.InterruptGrace <= 0 {
		c.InterruptGrace = 5 * time.Second
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 2 * time.Minute
	}
	if c.OutputLimit <= 0 {
		c.OutputLimit = 16 << 20
	}
	if c.Env == nil {
		c.Env = os.Environ
	}
	if c.Cwd == "" {
		c.Cwd = "/root"
		if fi, err := os.Stat(c.Cwd); err != nil || !fi.IsDir() {
			c.Cwd = "/"
		}
	}
	if c.Start == nil {
		c.Start = func(cmd *exec.Cmd) error { return cmd.Start() }
	}
	if c.Reaped == nil {
		c.Reaped = func(int) {}
	}
	if c.Python == "" {
		c.Python = "python3"
	}
	if c.Node == "" {
		c.Node = "node"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Sink receives what a call produces, in order. Its methods are called
// from one goroutine at a time.
type Sink interface {
	Stdout(p []byte) error
	Stderr(p []byte) error
	Output(h wire.OutputHeader, data []byte) error
}

// Restart reasons.
const (
	ReasonFirstUse        = "first use"
	ReasonReset           = "reset"
	ReasonInterruptFailed = "interrupt failed: the code did not stop within the grace period, so the interpreter was killed"
	ReasonUserChanged     = "the box's user changed, so the interpreter was restarted as the new one"
)

type key struct{ lang, name string }

func (k key) String() string { return k.lang + "/" + k.name }

// session is one named interpreter slot.
type session struct {
	key  key
	turn chan struct{} // holds one token while a call runs: FIFO, since blocked senders queue in order

	// Guarded by Manager.mu.
	waiting  int // calls holding or waiting for turn
	lastUsed time.Time

	// Guarded by turn.
	it       interp // nil when no interpreter runs
	reason   string // why the next start happens
	defaults boxDefaults
	user     string // the user it runs as (userOf)
}

// boxDefaults are a session request's StartCwd and StartEnv: what the
// running interpreter started with or last got.
type boxDefaults struct {
	cwd string
	env string // the entries joined with NUL
}

func defaultsOf(req *wire.SessionRequest) boxDefaults {
	return boxDefaults{cwd: req.StartCwd, env: strings.Join(req.StartEnv, "\x00")}
}

// userOf names the user an interpreter for req runs as ("" for the agent's).
func userOf(req *wire.SessionRequest) string {
	if req.StartUID == nil && req.StartGID == nil {
		return ""
	}
	f := func(id *uint32) string {
		if id == nil {
			return "-"
		}
		return strconv.FormatUint(uint64(*id), 10)
	}
	return f(req.StartUID) + ":" + f(req.StartGID)
}

// credential is the identity an interpreter for req runs as, the way an
// exec applies ExecRequest.UID and GID: an id not given stays the agent's,
// and a uid drops the supplementary groups. Nil: the agent's own.
func credential(req *wire.SessionRequest) *syscall.Credential {
	if req.StartUID == nil && req.StartGID == nil {
		return nil
	}
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), NoSetGroups: req.StartUID == nil}
	if req.StartUID != nil {
		cred.Uid = *req.StartUID
	}
	if req.StartGID != nil {
		cred.Gid = *req.StartGID
	}
	return cred
}

// Manager keeps a box's sessions.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[key]*session
	evicted  map[key]string // sessions shut down for room: the reason their next call gets
	procs    map[*process]struct{}
	closed   bool
}

// New returns a Manager with cfg's defaults filled in.
func New(cfg Config) *Manager {
	cfg.setDefaults()
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "session"), sessions: map[key]*session{}, evicted: map[key]string{}, procs: map[*process]struct{}{}}
}

// ErrBusy means every session slot is taken by a running call.
var ErrBusy = errors.New("all sessions are busy")

// Run runs code in the session req names and returns how it ended.
// Cancelling ctx interrupts the code (the session keeps its state) and
// returns the result with Cancelled set. Errors are *wire.Error.
func (m *Manager) Run(ctx context.Context, req *wire.SessionRequest, code string, sink Sink) (*wire.SessionResult, error) {
	k := key{req.Language, req.Name}
	s, err := m.acquire(k)
	if err != nil {
		return nil, err
	}
	defer m.release(s)
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, wire.Errorf(wire.CodeInvalid, "%s", wire.MsgSessionQueueCancelled)
	}
	defer func() { <-s.turn }()
	return m.runLocked(ctx, s, req, code, sink)
}

// acquire returns the session for k, making room when needed, and counts
// the caller as waiting on it.
func (m *Manager) acquire(k key) (*session, *wire.Error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, wire.Errorf(wire.CodeInternal, "the agent is shutting down")
	}
	s := m.sessions[k]
	if s == nil {
		if len(m.sessions) >= m.cfg.MaxSessions && !m.evictLocked() {
			return nil, wire.Errorf(wire.CodeExhausted, "%v: this box has %d sessions and every one is running a call; wait for one to finish", ErrBusy, m.cfg.MaxSessions)
		}
		s = &session{key: k, turn: make(chan struct{}, 1), reason: ReasonFirstUse}
		if r, ok := m.evicted[k]; ok {
			s.reason = r
			delete(m.evicted, k)
		}
		m.sessions[k] = s
	}
	s.waiting++
	s.lastUsed = time.Now()
	return s, nil
}

// release counts a caller of acquire out. A session left with no caller
// that never had an interpreter (its start failed: a bad cwd, say) holds
// nothing and goes, so it takes no room from sessions that have state.
// (No caller holds turn when waiting is 0, so it and reason are stable.)
func (m *Manager) release(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.waiting--
	s.lastUsed = time.Now()
	if s.waiting == 0 && s.it == nil && s.reason == ReasonFirstUse && m.sessions[s.key] == s {
		delete(m.sessions, s.key)
	}
}

// maxEvicted bounds the reasons kept for evicted sessions' next calls.
const maxEvicted = 256

// evictLocked shuts the least recently used idle session down. m.mu must be held.
func (m *Manager) evictLocked() bool {
	var idle []*session
	for _, s := range m.sessions {
		if s.waiting == 0 {
			idle = append(idle, s)
		}
	}
	if len(idle) == 0 {
		return false
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].lastUsed.Before(idle[j].lastUsed) })
	s := idle[0]
	delete(m.sessions, s.key)
	why := fmt.Sprintf("evicted: the session was idle the longest when a new one needed room (at most %d sessions per box), so its state was lost", m.cfg.MaxSessions)
	if s.it == nil {
		why = s.reason // it had no state to lose; its next call hears why it has none
	}
	if why != ReasonFirstUse {
		for k := range m.evicted {
			if len(m.evicted) < maxEvicted {
				break
			}
			delete(m.evicted, k) // any: Go's map order is random
		}
		m.evicted[s.key] = why
	}
	// No call holds or waits for s (waiting is 0 under m.mu, and it is no
	// longer in the map), so its interpreter is ours to kill.
	if s.it != nil {
		m.log.Info("evicting session", "session", s.key.String())
		go s.it.kill("evicted")
	}
	return true
}

// Close kills every interpreter; calls in flight end with the
// interpreter's death.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	var all []*process
	for p := range m.procs {
		all = append(all, p)
	}
	m.mu.Unlock()
	// In parallel: each kill waits (up to killWait) for its process.
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.kill("the agent shut down")
		}()
	}
	wg.Wait()
}

// track records a live interpreter process (for Close) until it exits.
func (m *Manager) track(p *process) {
	m.mu.Lock()
	closed := m.closed
	m.procs[p] = struct{}{}
	m.mu.Unlock()
	if closed {
		p.kill("the agent shut down")
	}
	go func() {
		<-p.done
		m.mu.Lock()
		delete(m.procs, p)
		m.mu.Unlock()
	}()
}

// runLocked runs one call; the caller holds s.turn.
func (m *Manager) runLocked(ctx context.Context, s *session, req *wire.SessionRequest, code string, sink Sink) (*wire.SessionResult, error) {
	start := time.Now()
	res := &wire.SessionResult{}
	if s.it != nil {
		select {
		case <-s.it.exited():
			s.reason = s.it.death().reason
			s.it = nil
		default:
		}
	}
	if s.it != nil && s.user != userOf(req) {
		s.it.kill(ReasonUserChanged)
		s.it = nil
		s.reason = ReasonUserChanged
	}
	if req.Reset && s.it != nil {
		s.it.kill(ReasonReset)
		s.it = nil
		s.reason = ReasonReset
	}
	if req.Reset && s.reason == ReasonFirstUse {
		s.reason = ReasonReset
	}
	fresh := false
	if s.it == nil {
		it, err := m.startInterp(ctx, s.key, req)
		if err != nil {
			return nil, err
		}
		s.it, s.user, fresh = it, userOf(req), true
		res.Restarted, res.RestartReason = true, s.reason
		s.reason = ""
	}
	limit := m.cfg.OutputLimit
	if req.OutputLimit > 0 {
		limit = min(limit, req.OutputLimit)
	}
	out := newOutput(sink, limit)
	job := &job{code: code, out: out}
	if d := defaultsOf(req); fresh {
		s.defaults = d
	} else {
		job.cwd, job.env = req.Cwd, req.Env
		// The box's defaults reach a running interpreter only when they
		// changed since it got them (a pooled box claimed with an env), so
		// what the code changed persists and a call is one round trip.
		if d.cwd != s.defaults.cwd && job.cwd == "" {
			job.cwd = req.StartCwd
		}
		if d.env != s.defaults.env {
			job.env = append(append([]string{}, req.StartEnv...), req.Env...)
		}
		s.defaults = d
	}
	// The out-of-memory count before the call, read beside it rather than
	// ahead of it (reading /proc/vmstat was a tenth of the agent's CPU time
	// per call); only a death looks at it. The read takes microseconds,
	// far less than any code takes to fill the box's memory.
	oomBefore := make(chan int64, 1)
	go func() { oomBefore <- oomKills() }()
	p := s.it.run(job)

	var timeout <-chan time.Time
	if req.TimeoutMs > 0 {
		t := time.NewTimer(time.Duration(req.TimeoutMs) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	interrupted, killed := false, false
	select {
	case <-p.done:
	case <-timeout:
		res.TimedOut, interrupted = true, true
	case <-ctx.Done():
		res.Cancelled, interrupted = true, true
	}
	if interrupted {
		s.it.interrupt()
		grace := time.NewTimer(m.cfg.InterruptGrace)
		select {
		case <-p.done:
		case <-grace.C:
			m.log.Warn("interrupt did not take; killing the interpreter", "session", s.key.String())
			s.it.kill(ReasonInterruptFailed) // waits up to killWait for the exit
			killed = true
			select {
			case <-s.it.exited():
				<-p.done // closes at once after the exit
			default:
				// Unkillable for now (a thread stuck in the kernel): the
				// session leaves it behind and starts a new one next time.
				m.log.Error("interpreter did not end when killed; abandoning it", "session", s.key.String())
				res.ExitCode, res.Ended = -1, "the interpreter did not end when killed after its interrupt failed; it was abandoned"
				res.Error = &wire.SessionError{Name: "InterpreterDied", Message: res.Ended + "; the next call starts a new one"}
				s.reason, s.it = res.Ended, nil
				out.counts(res)
				res.DurationMs = time.Since(start).Milliseconds()
				return res, nil
			}
		}
		grace.Stop()
	}
	o := p.outcome
	if killed {
		// Killed at the grace's end even if the code ended just then (its
		// markers still on the way): the state is gone, so this call says
		// so, not the next one.
		o.died = true
	}
	res.ExecutionCount = o.count
	res.Error = o.err
	if o.err != nil {
		res.ExitCode = 1
	}
	if interrupted && o.err == nil && !o.died {
		// The code ended by itself while the interrupt was sent.
		res.TimedOut, res.Cancelled = false, false
	}
	if o.died {
		d := s.it.death()
		if d.killedBy == "" && d.signal == "SIGKILL" && oomKills() > <-oomBefore {
			d.reason = "the interpreter was killed by the out-of-memory killer (the box's memory limit)"
		}
		res.ExitCode, res.Signal, res.Ended = d.code, d.signal, d.reason
		if res.Error == nil {
			res.Error = &wire.SessionError{Name: "InterpreterDied", Message: d.reason + "; its state is lost and the next call starts a new one"}
		}
		if tail := d.tail; tail != "" {
			res.Error.Traceback = tail
		}
		s.reason = d.reason
		s.it = nil
	}
	out.counts(res)
	res.DurationMs = time.Since(start).Milliseconds()
	return res, nil
}

// startInterp starts the interpreter of k's language.
func (m *Manager) startInterp(ctx context.Context, k key, req *wire.SessionRequest) (interp, *wire.Error) {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer cancel()
	env := mergeEnv(mergeEnv(m.cfg.Env(), req.StartEnv), req.Env)
	cwd := m.cfg.Cwd
	if dir := cmp.Or(req.Cwd, req.StartCwd); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, wire.Errorf(wire.CodeNotDir, "working directory %q is not a directory", dir)
		}
		cwd = dir
	}
	t := time.Now()
	var it interp
	var err error
	cred := credential(req)
	switch k.lang {
	case wire.LangPython:
		it, err = startPython(sctx, m, k, env, cwd, cred)
	case wire.LangJavaScript:
		it, err = startNode(sctx, m, k, env, cwd, cred)
	default:
		return nil, wire.Errorf(wire.CodeInvalid, "no sessions for language %q", k.lang)
	}
	if err != nil {
		m.log.Warn("interpreter did not start", "session", k.String(), "err", err)
		var werr *wire.Error
		if errors.As(err, &werr) {
			return nil, werr
		}
		if ctx.Err() != nil {
			return nil, wire.Errorf(wire.CodeInvalid, "cancelled while the interpreter started")
		}
		return nil, wire.Errorf(wire.CodeInternal, "starting the %s interpreter: %v", k.lang, err)
	}
	m.log.Info("interpreter started", "session", k.String(), "duration", time.Since(t))
	return it, nil
}

// interp is a running interpreter. run is called by one call at a time.
type interp interface {
	// run starts a job; its pending is done when the code finished, raised,
	// or the interpreter died.
	run(j *job) *pending
	// interrupt asks the running code to stop (KeyboardInterrupt in Python).
	interrupt()
	// kill ends the interpreter at once, recording why, and waits for it.
	kill(why string)
	exited() <-chan struct{}
	death() death
}

// job is one call's work for an interpreter.
type job struct {
	code string
	cwd  string   // change to this directory first ("" keeps it)
	env  []string // set these variables first
	out  *output
}

// pending is a job in progress.
type pending struct {
	done    chan struct{}
	outcome outcome // set before done is closed
}

// outcome is how a job ended.
type outcome struct {
	count int
	err   *wire.SessionError
	died  bool
}

// death describes an interpreter that ended.
type death struct {
	code     int
	signal   string
	killedBy string // set when the agent killed it
	reason   string
	tail     string // its last own output, for diagnostics
}

// mergeEnv returns base with extra's entries added, later keys winning.
func mergeEnv(base, extra []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range append(append([]string{}, base...), extra...) {
		k := kv
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				k = kv[:i]
				break
			}
		}
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}
