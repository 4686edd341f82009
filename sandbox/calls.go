package sandbox

// The manager's own request and result types for calls into a box. They
// are the manager's public API: callers (the tools layer) never see the
// guest agent's wire protocol, which can change without them. Conversion
// happens here, at the boundary, field by field.

import (
	"io"
	"io/fs"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// ExecRequest runs a program in a box.
type ExecRequest struct {
	Argv []string
	// Env holds KEY=VALUE entries added to (and overriding) the box's
	// environment.
	Env []string
	// Cwd, UID and GID default to the box image's working directory and user.
	Cwd      string
	UID, GID *uint32
	// Stdin is the whole standard input, when known up front.
	Stdin []byte
	// TimeoutMs kills the process group after this long; 0: no timeout.
	TimeoutMs int64
	// OutputLimit caps stdout+stderr; the rest is dropped and the result
	// says Truncated. 0: the agent's default.
	OutputLimit int64
}

// ExecIO streams a run's input and output.
type ExecIO struct {
	// Stdin, when set, is streamed to the process; ExecRequest.Stdin must
	// then be empty.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// ExecResult is how a program ended.
type ExecResult struct {
	ExitCode    int    // -1 when killed by a signal
	Signal      string // e.g. "SIGKILL"
	TimedOut    bool
	Cancelled   bool
	Truncated   bool
	StdoutBytes int64 // produced, including dropped bytes
	StderrBytes int64
	DurationMs  int64
}

// WriteFileRequest writes a file in a box (atomically, parents created).
type WriteFileRequest struct {
	Path string
	Mode fs.FileMode // default 0644
	// Size, when >= 0, is the exact number of bytes the reader holds; -1:
	// unknown.
	Size int64
	// UID and GID default to the box image's user.
	UID, GID *uint32
}

// ReadFileRequest reads a file from a box.
type ReadFileRequest struct {
	Path string
	// MaxBytes stops reading after this many bytes (the result says
	// Truncated); 0: the agent's limit.
	MaxBytes int64
}

// FileResult is what a file call moved.
type FileResult struct {
	Bytes     int64
	Truncated bool // a read stopped at its limit
}

// Interpreter session languages.
const (
	LangPython     = wire.LangPython
	LangJavaScript = wire.LangJavaScript
)

// Limits of a session call's rich outputs (enforced in the box).
const (
	MaxOutputs    = wire.MaxOutputs    // outputs per call
	MaxImages     = wire.MaxImages     // images per call
	MaxImageBytes = wire.MaxImageBytes // bytes per image
)

// ValidSessionName says name may name an interpreter session.
func ValidSessionName(name string) bool { return wire.ValidSessionName(name) }

// IsImage says outputs of this MIME type are images.
func IsImage(mime string) bool { return wire.IsImage(mime) }

// SessionRequest runs code in an interpreter session of a box.
type SessionRequest struct {
	Name     string
	Language string // LangPython or LangJavaScript
	// TimeoutMs interrupts the code after this long (the session keeps its
	// state); 0: no timeout.
	TimeoutMs int64
	// Reset restarts the interpreter (state cleared) before running.
	Reset bool
	// Env (KEY=VALUE) and Cwd are applied before the code runs and persist
	// like any change the code makes.
	Env []string
	Cwd string
	// OutputLimit caps stdout, stderr and text outputs together; 0: the
	// agent's default.
	OutputLimit int64
}

// Output kinds.
const (
	OutputDisplay = wire.OutputDisplay // display data: a plot, a rich object
	OutputResult  = wire.OutputResult  // the last expression's value
)

// Output describes one rich output of a session call.
type Output struct {
	Kind string // OutputDisplay or OutputResult
	Mime string
	Size int64
}

// SessionIO receives a session call's output as it comes.
type SessionIO struct {
	Stdout, Stderr io.Writer
	// Output receives each rich output (within the limits above).
	Output func(o Output, data []byte)
}

// CodeError is an exception the code raised (or the interpreter's end).
type CodeError struct {
	Name, Message, Traceback string
}

// SessionResult is how a session call ended.
type SessionResult struct {
	// ExitCode is 0 on success, 1 when the code raised, and the
	// interpreter's own exit code (or -1 with Signal) when it died.
	ExitCode    int
	Signal      string
	TimedOut    bool
	Cancelled   bool
	Truncated   bool
	StdoutBytes int64
	StderrBytes int64
	DurationMs  int64
	Error       *CodeError
	// ExecutionCount is the interpreter's cell counter after this call.
	ExecutionCount int
	// Restarted says the interpreter was (re)started for this call, and
	// RestartReason why (first use, reset, crash, eviction, ...).
	Restarted     bool
	RestartReason string
	// Ended, when set, says the interpreter ended during this call and why;
	// the next call starts a new one.
	Ended string
	// OutputsDropped counts outputs over the limits.
	OutputsDropped int
}

func (r ExecRequest) wire() wire.ExecRequest {
	return wire.ExecRequest{Argv: r.Argv, Env: r.Env, Cwd: r.Cwd, UID: r.UID, GID: r.GID, Stdin: r.Stdin,
		TimeoutMs: r.TimeoutMs, OutputLimit: r.OutputLimit}
}

func (e ExecIO) client() client.ExecIO {
	return client.ExecIO{Stdin: e.Stdin, Stdout: e.Stdout, Stderr: e.Stderr}
}

func execResult(r *wire.ExecResult) *ExecResult {
	if r == nil {
		return nil
	}
	return &ExecResult{ExitCode: r.ExitCode, Signal: r.Signal, TimedOut: r.TimedOut, Cancelled: r.Cancelled, Truncated: r.Truncated,
		StdoutBytes: r.StdoutBytes, StderrBytes: r.StderrBytes, DurationMs: r.DurationMs}
}

func (r WriteFileRequest) wire() wire.WriteFileReq {
	return wire.WriteFileReq{Path: r.Path, Mode: r.Mode, Size: r.Size, UID: r.UID, GID: r.GID}
}

func (r ReadFileRequest) wire() wire.ReadFileReq {
	return wire.ReadFileReq{Path: r.Path, MaxBytes: r.MaxBytes}
}

func fileResult(r *wire.Result) *FileResult {
	if r == nil {
		return nil
	}
	return &FileResult{Bytes: r.Bytes, Truncated: r.Truncate}
}

func (r SessionRequest) wire() wire.SessionRequest {
	return wire.SessionRequest{Name: r.Name, Language: r.Language, TimeoutMs: r.TimeoutMs, Reset: r.Reset, Env: r.Env, Cwd: r.Cwd,
		OutputLimit: r.OutputLimit}
}

func (s SessionIO) client() client.SessionIO {
	c := client.SessionIO{Stdout: s.Stdout, Stderr: s.Stderr}
	if out := s.Output; out != nil {
		c.Output = func(h wire.OutputHeader, data []byte) { out(Output{Kind: h.Kind, Mime: h.Mime, Size: h.Size}, data) }
	}
	return c
}

func sessionResult(r *wire.SessionResult) *SessionResult {
	if r == nil {
		return nil
	}
	res := &SessionResult{ExitCode: r.ExitCode, Signal: r.Signal, TimedOut: r.TimedOut, Cancelled: r.Cancelled, Truncated: r.Truncated,
		StdoutBytes: r.StdoutBytes, StderrBytes: r.StderrBytes, DurationMs: r.DurationMs, ExecutionCount: r.ExecutionCount,
		Restarted: r.Restarted, RestartReason: r.RestartReason, Ended: r.Ended, OutputsDropped: r.OutputsDropped}
	if e := r.Error; e != nil {
		res.Error = &CodeError{Name: e.Name, Message: e.Message, Traceback: e.Traceback}
	}
	return res
}
