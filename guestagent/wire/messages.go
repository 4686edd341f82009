package wire

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// ProtocolVersion is the version of this protocol. A host and an agent talk
// only when their versions are equal; the hello tells each the other's.
const ProtocolVersion = 1

// Magic opens every Hello so an agent can tell a host from line noise on a
// serial port.
const Magic = "boxlite-agent"

// Hello is the host's first frame on a new connection, before yamux starts.
type Hello struct {
	Magic    string `json:"magic"`
	Protocol int    `json:"protocol"`
	Minor    int    `json:"minor,omitempty"` // ProtocolMinor of the host
	Client   string `json:"client"`          // e.g. "boxlite-mcp/0.1.0"
}

// HelloReply is the agent's answer. If Error is set the agent refuses the
// connection and closes it after writing the reply.
type HelloReply struct {
	Protocol     int      `json:"protocol"`
	Minor        int      `json:"minor,omitempty"` // ProtocolMinor of the agent
	AgentVersion string   `json:"agent_version"`
	Capabilities []string `json:"capabilities"`
	Error        string   `json:"error,omitempty"`
}

// Capabilities this agent version offers.
var Capabilities = []string{"exec", "exec.stdin-stream", "file.read", "file.write", "stat", "list_dir", "info", "shutdown", CapSession, CapClone}

// Has reports whether the agent offers capability name.
func (h HelloReply) Has(name string) bool {
	for _, c := range h.Capabilities {
		if c == name {
			return true
		}
	}
	return false
}

// Op names a call.
type Op string

// Calls.
const (
	OpPing      Op = "ping"
	OpInfo      Op = "info"
	OpExec      Op = "exec"
	OpWriteFile Op = "write_file"
	OpReadFile  Op = "read_file"
	OpStat      Op = "stat"
	OpListDir   Op = "list_dir"
	OpShutdown  Op = "shutdown"
)

// Request is the first frame of every call. Only the field for Op is set.
type Request struct {
	Op        Op              `json:"op"`
	Exec      *ExecRequest    `json:"exec,omitempty"`
	WriteFile *WriteFileReq   `json:"write_file,omitempty"`
	ReadFile  *ReadFileReq    `json:"read_file,omitempty"`
	Path      string          `json:"path,omitempty"` // stat, list_dir
	Shutdown  *ShutdownReq    `json:"shutdown,omitempty"`
	Session   *SessionRequest `json:"session,omitempty"`
	Clone     *CloneReq       `json:"clone,omitempty"`
	Meta      map[string]any  `json:"meta,omitempty"`
}

// ExecRequest runs a program.
type ExecRequest struct {
	Argv []string `json:"argv"`
	// Env holds KEY=VALUE entries added to (and overriding) the agent's base
	// environment (PATH, HOME, LANG).
	Env []string `json:"env,omitempty"`
	Cwd string   `json:"cwd,omitempty"`
	UID *uint32  `json:"uid,omitempty"`
	GID *uint32  `json:"gid,omitempty"`
	// Stdin is the whole standard input, when known up front.
	Stdin []byte `json:"stdin,omitempty"`
	// StdinStream says Stdin frames and an EOF frame follow the request.
	StdinStream bool `json:"stdin_stream,omitempty"`
	// TimeoutMs kills the process group after this long; 0 means no timeout.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// OutputLimit caps stdout+stderr bytes sent back; the rest is read and
	// dropped, and the result says Truncated. 0 means the agent's default.
	OutputLimit int64 `json:"output_limit,omitempty"`
}

// ExecResult is how a program ended.
type ExecResult struct {
	ExitCode    int    `json:"exit_code"`        // -1 when killed by a signal
	Signal      string `json:"signal,omitempty"` // e.g. "SIGKILL"
	TimedOut    bool   `json:"timed_out,omitempty"`
	Cancelled   bool   `json:"cancelled,omitempty"`
	Truncated   bool   `json:"truncated,omitempty"`
	StdoutBytes int64  `json:"stdout_bytes"` // produced, including dropped bytes
	StderrBytes int64  `json:"stderr_bytes"`
	DurationMs  int64  `json:"duration_ms"`
}

// WriteFileReq writes a file; Data frames and an EOF frame follow it.
type WriteFileReq struct {
	Path string      `json:"path"`
	Mode fs.FileMode `json:"mode,omitempty"` // default 0644
	// Size, when >= 0, is the exact number of bytes that follow; the agent
	// refuses up front what is over its limit.
	Size int64   `json:"size"`
	UID  *uint32 `json:"uid,omitempty"`
	GID  *uint32 `json:"gid,omitempty"`
}

// ReadFileReq reads a file; the agent sends Data frames then a Result.
type ReadFileReq struct {
	Path string `json:"path"`
	// MaxBytes stops reading after this many bytes (the result says
	// Truncated). 0 means the agent's limit.
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// ShutdownReq powers the box off (or ends the agent outside a VM).
type ShutdownReq struct {
	Reboot bool `json:"reboot,omitempty"`
}

// FileInfo describes a file in the box.
type FileInfo struct {
	Name    string      `json:"name"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mod_time"`
	IsDir   bool        `json:"is_dir"`
	Link    string      `json:"link,omitempty"` // symlink target
}

// Info describes the box as seen from inside.
type Info struct {
	AgentVersion string `json:"agent_version"`
	Protocol     int    `json:"protocol"`
	Hostname     string `json:"hostname"`
	Kernel       string `json:"kernel"`
	Arch         string `json:"arch"`
	UptimeMs     int64  `json:"uptime_ms"`
	MemTotalKiB  int64  `json:"mem_total_kib"`
	MemAvailKiB  int64  `json:"mem_avail_kib"`
	PID          int    `json:"pid"`
	NumCPU       int    `json:"num_cpu"`
}

// Result is the last frame of every call.
type Result struct {
	Error    *Error         `json:"error,omitempty"`
	Exec     *ExecResult    `json:"exec,omitempty"`
	File     *FileInfo      `json:"file,omitempty"` // write_file, read_file, stat
	Bytes    int64          `json:"bytes,omitempty"`
	Truncate bool           `json:"truncated,omitempty"`
	Entries  []FileInfo     `json:"entries,omitempty"`
	Info     *Info          `json:"info,omitempty"`
	Session  *SessionResult `json:"session,omitempty"`
}

// Code classifies an agent-side failure.
type Code string

// Error codes. The host maps them to its own error classes.
const (
	CodeInvalid    Code = "invalid_argument"
	CodeNotFound   Code = "not_found"
	CodeIsDir      Code = "is_directory"
	CodeNotDir     Code = "not_directory"
	CodePermission Code = "permission_denied"
	CodeTooLarge   Code = "too_large"
	CodeNoSpace    Code = "no_space"
	CodeExists     Code = "exists"
	CodeExhausted  Code = "resource_exhausted"
	CodeInternal   Code = "internal"
)

// Error is a failure reported by the agent.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WriteJSON marshals v into one frame of type t.
func WriteJSON(w io.Writer, t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxControl {
		return fmt.Errorf("%w: %s of %d bytes", ErrFrameTooLarge, t, len(b))
	}
	return WriteFrame(w, t, b)
}

// ReadJSON reads one frame, checks it has type want and decodes it into v.
func ReadJSON(r *Reader, want FrameType, v any) error {
	f, err := r.ReadFrame()
	if err != nil {
		return err
	}
	return DecodeJSON(f, want, v)
}

// DecodeJSON checks f has type want and decodes its payload into v.
func DecodeJSON(f Frame, want FrameType, v any) error {
	if f.Type != want {
		return fmt.Errorf("%w: got %s frame, want %s", ErrBadFrame, f.Type, want)
	}
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadFrame, want, err)
	}
	return nil
}

// Validate checks a decoded Request is well-formed for its Op.
func (r *Request) Validate() *Error {
	switch r.Op {
	case OpPing, OpInfo:
	case OpShutdown:
	case OpExec:
		if r.Exec == nil || len(r.Exec.Argv) == 0 || r.Exec.Argv[0] == "" {
			return Errorf(CodeInvalid, "exec needs a non-empty argv")
		}
		if r.Exec.TimeoutMs < 0 || r.Exec.OutputLimit < 0 {
			return Errorf(CodeInvalid, "exec timeout and output limit must not be negative")
		}
		if r.Exec.StdinStream && len(r.Exec.Stdin) > 0 {
			return Errorf(CodeInvalid, "exec takes stdin inline or as a stream, not both")
		}
	case OpWriteFile:
		if r.WriteFile == nil || r.WriteFile.Path == "" {
			return Errorf(CodeInvalid, "write_file needs a path")
		}
	case OpReadFile:
		if r.ReadFile == nil || r.ReadFile.Path == "" {
			return Errorf(CodeInvalid, "read_file needs a path")
		}
		if r.ReadFile.MaxBytes < 0 {
			return Errorf(CodeInvalid, "read_file max_bytes must not be negative")
		}
	case OpStat, OpListDir:
		if r.Path == "" {
			return Errorf(CodeInvalid, "%s needs a path", r.Op)
		}
	case OpSession:
		return r.Session.validate()
	case OpClone:
		return r.Clone.validate()
	default:
		return Errorf(CodeInvalid, "unknown op %q", r.Op)
	}
	return nil
}
