package wire

import (
	"fmt"
	"regexp"
	"time"
)

// Interpreter sessions (protocol minor version 1, capability "session").
//
// A session call is: the host writes a Request with Op OpSession, then the
// code as Data frames (exactly CodeBytes bytes) and an EOF frame; it may
// send a Cancel frame at any time after. The agent answers with Stdout and
// Stderr frames as the code prints, an Output frame followed by exactly
// OutputHeader.Size bytes of Data frames for every rich output, and ends
// with a Result whose Session field is set.

// ProtocolMinor is the minor version of this protocol: additions a host
// can ask for, told by the agent in its hello reply. An agent that does not
// send it (0) predates sessions; 1 has sessions; 2 also takes a session
// request's StartCwd and StartEnv (an agent of minor 1 ignores them, so a
// host gives it the box's defaults as Cwd and Env instead); 3 also takes
// StartUID and StartGID (an older agent ignores them: its interpreters run
// as the agent's user, root).
const ProtocolMinor = 3

// MinorSessionDefaults is the first minor version that takes
// SessionRequest.StartCwd and StartEnv.
const MinorSessionDefaults = 2

// MinorSessionUser is the first minor version that takes
// SessionRequest.StartUID and StartGID.
const MinorSessionUser = 3

// CapSession is the capability of an agent that runs interpreter sessions.
const CapSession = "session"

// OpSession runs code in an interpreter session.
const OpSession Op = "session"

// Session languages.
const (
	LangPython     = "python"
	LangJavaScript = "javascript"
)

// Limits of session calls; both sides enforce them.
const (
	// MaxSessionCode is the largest code a session call carries.
	MaxSessionCode = 2 << 20
	// MaxImageBytes is the largest image output returned; larger ones are
	// counted and dropped.
	MaxImageBytes = 4 << 20
	// MaxImages is how many image outputs one call returns; the rest are
	// counted and dropped.
	MaxImages = 16
	// MaxOutputs is how many outputs of any kind one call returns.
	MaxOutputs = 256
	// MaxOutputBytes caps one non-image output (text/html and the like).
	MaxOutputBytes = 4 << 20
)

// SessionHeartbeat is how often the agent sends an empty Stdout frame while
// a session call runs, so the host can tell a quiet call from a frozen box.
const SessionHeartbeat = 5 * time.Second

// sessionNameRE is what a session name may be.
var sessionNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// ValidSessionName reports whether name may name a session.
func ValidSessionName(name string) bool { return sessionNameRE.MatchString(name) }

// SessionRequest runs code in the session Name of Language, starting the
// interpreter when it is not running.
type SessionRequest struct {
	Name     string `json:"name"`
	Language string `json:"language"`
	// CodeBytes is the exact size of the code that follows in Data frames.
	CodeBytes int64 `json:"code_bytes"`
	// TimeoutMs interrupts the code after this long (its state is kept);
	// 0 means no timeout.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// Reset restarts the interpreter (state cleared) before running.
	Reset bool `json:"reset,omitempty"`
	// Env (KEY=VALUE) and Cwd are applied to the interpreter before the code
	// runs, and persist like any change the code makes.
	Env []string `json:"env,omitempty"`
	Cwd string   `json:"cwd,omitempty"`
	// StartCwd and StartEnv are the box's defaults: a new interpreter
	// starts in StartCwd (when Cwd is empty) with StartEnv under Env. A
	// running interpreter gets them applied only when they differ from
	// what it started with or last got (a pooled box claimed with an env),
	// so the working directory and variables the code changed persist, and
	// a call costs one round trip to the interpreter.
	StartCwd string   `json:"start_cwd,omitempty"`
	StartEnv []string `json:"start_env,omitempty"`
	// StartUID and StartGID are the box's user (the image config's User),
	// as for an exec: the interpreter runs as them, with no supplementary
	// groups (nil: the agent's user). An interpreter that runs as another
	// user is restarted.
	StartUID *uint32 `json:"start_uid,omitempty"`
	StartGID *uint32 `json:"start_gid,omitempty"`
	// OutputLimit caps stdout, stderr and text outputs together; 0 means
	// the agent's default.
	OutputLimit int64 `json:"output_limit,omitempty"`
}

// Output kinds.
const (
	OutputDisplay = "display" // display_data, a plot, print of a rich object
	OutputResult  = "result"  // a representation of the last expression's value
)

// OutputHeader announces one rich output; Size bytes of Data frames follow.
type OutputHeader struct {
	Kind string `json:"kind"`
	Mime string `json:"mime"`
	Size int64  `json:"size"`
}

// SessionError is an exception the code raised (or the interpreter's end).
type SessionError struct {
	Name      string `json:"name"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
}

// SessionResult is how a session call ended.
type SessionResult struct {
	// ExitCode is 0 on success, 1 when the code raised, and the
	// interpreter's own exit code (or -1 with Signal) when it died.
	ExitCode    int           `json:"exit_code"`
	Signal      string        `json:"signal,omitempty"`
	TimedOut    bool          `json:"timed_out,omitempty"`
	Cancelled   bool          `json:"cancelled,omitempty"`
	Truncated   bool          `json:"truncated,omitempty"`
	StdoutBytes int64         `json:"stdout_bytes"`
	StderrBytes int64         `json:"stderr_bytes"`
	DurationMs  int64         `json:"duration_ms"`
	Error       *SessionError `json:"error,omitempty"`
	// ExecutionCount is the interpreter's cell counter after this call.
	ExecutionCount int `json:"execution_count"`
	// Restarted says the interpreter was (re)started for this call, and
	// RestartReason why (first use, reset, crash, eviction, ...).
	Restarted     bool   `json:"restarted,omitempty"`
	RestartReason string `json:"restart_reason,omitempty"`
	// Ended, when set, says the interpreter ended during this call and why;
	// the next call starts a new one.
	Ended string `json:"ended,omitempty"`
	// OutputsDropped and ImagesDropped count outputs over the limits.
	OutputsDropped int `json:"outputs_dropped,omitempty"`
	ImagesDropped  int `json:"images_dropped,omitempty"`
}

func (r *SessionRequest) validate() *Error {
	switch {
	case r == nil:
		return Errorf(CodeInvalid, "session call without its request")
	case !ValidSessionName(r.Name):
		return Errorf(CodeInvalid, "session name %q is not valid: 1 to 32 of a-z, 0-9, _ and -", r.Name)
	case r.Language != LangPython && r.Language != LangJavaScript:
		return Errorf(CodeInvalid, "sessions run python or javascript, not %q", r.Language)
	case r.CodeBytes < 0 || r.CodeBytes > MaxSessionCode:
		return Errorf(CodeInvalid, "session code must be 0 to %d bytes (got %d)", MaxSessionCode, r.CodeBytes)
	case r.TimeoutMs < 0 || r.OutputLimit < 0:
		return Errorf(CodeInvalid, "session timeout and output limit must not be negative")
	}
	return nil
}

// Validate checks a decoded OutputHeader against the limits.
func (h *OutputHeader) Validate() error {
	limit := int64(MaxOutputBytes)
	if IsImage(h.Mime) {
		limit = MaxImageBytes
	}
	switch {
	case h.Kind != OutputDisplay && h.Kind != OutputResult:
		return fmt.Errorf("%w: output kind %q", ErrBadFrame, h.Kind)
	case !ValidMime(h.Mime):
		return fmt.Errorf("%w: output mime type of %d bytes", ErrBadFrame, len(h.Mime))
	case h.Size < 0 || h.Size > limit:
		return fmt.Errorf("%w: %s output of %d bytes (limit %d)", ErrFrameTooLarge, h.Mime, h.Size, limit)
	}
	return nil
}

// MsgSessionQueueCancelled is the agent's error for a session call
// cancelled before its turn came (the host tells it from others by it).
const MsgSessionQueueCancelled = "cancelled while waiting for the session's previous call"

// ValidMime reports whether an output's mime type can go on the wire:
// 1 to 255 bytes.
func ValidMime(mime string) bool { return mime != "" && len(mime) <= 255 }

// IsImage reports whether mime is an image returned as image content.
func IsImage(mime string) bool { return mime == "image/png" || mime == "image/jpeg" }
