package tools

// The tools' input and output types. Field names and JSON names are the
// public contract; schemas/ holds the JSON Schemas generated from them.

// CreateBoxIn is create_box's input.
type CreateBoxIn struct {
	Name               string            `json:"name,omitempty" jsonschema:"Optional name, unique among your boxes; usable wherever a box is asked for"`
	Image              string            `json:"image,omitempty" jsonschema:"Guest image: a local image name, or an OCI/Docker reference such as python:3.12-slim or ghcr.io/org/tool:1.4, pulled on first use (its Env, WorkingDir and User apply; Entrypoint and Cmd are ignored)"`
	Engine             string            `json:"engine,omitempty" jsonschema:"Isolation engine: auto picks the strongest this host can run (krun, then qemu, then jail); k8s runs the box as a pod on the server's Kubernetes cluster, when it has one"`
	CPUs               int               `json:"cpus,omitempty" jsonschema:"Virtual CPUs"`
	MemoryMiB          int               `json:"memory_mib,omitempty" jsonschema:"Memory limit in MiB"`
	DiskMiB            int               `json:"disk_mib,omitempty" jsonschema:"Disk size in MiB (default 4096, 256 to 65536): the box's files cannot grow past it"`
	Network            bool              `json:"network,omitempty" jsonschema:"Give the box outbound network access (off by default)"`
	Env                map[string]string `json:"env,omitempty" jsonschema:"Environment variables for every command run in the box"`
	TTLSeconds         int               `json:"ttl_seconds,omitempty" jsonschema:"Destroy the box this many seconds after creation (0: never)"`
	IdleTimeoutSeconds int               `json:"idle_timeout_seconds,omitempty" jsonschema:"Stop the box after this many seconds without use; it restarts on the next call (0: server default)"`
	NetworkAllow       []string          `json:"network_allow,omitempty" jsonschema:"Only these destinations (implies network): host names, *.suffix wildcards, IPs or CIDRs, each optionally with :port. Names resolve through the box's own DNS, which answers only listed names. Loopback, link-local (cloud metadata), private, CGNAT and the host's own addresses are refused unless an IP or CIDR entry names them"`
	FromSnapshot       string            `json:"from_snapshot,omitempty" jsonschema:"Make the box from this snapshot (id, name or prefix; see snapshot_box): its files, and where the snapshot includes memory its running processes and interpreter sessions, with a new identity. The image, engine and disk size are the snapshot's; with memory, so are cpus, memory_mib and whether there is a network"`
}

// BoxOut describes a box in create_box's result.
type BoxOut struct {
	ID        string `json:"id" jsonschema:"Box id (a lower-case ULID)"`
	Name      string `json:"name" jsonschema:"Box name, empty when unnamed"`
	Status    string `json:"status" jsonschema:"Lifecycle status"`
	Engine    string `json:"engine" jsonschema:"Engine running the box"`
	Image     string `json:"image" jsonschema:"Guest image"`
	CreatedAt string `json:"created_at" jsonschema:"Creation time, RFC 3339"`
}

// RunCodeIn is run_code's input.
type RunCodeIn struct {
	Box            string            `json:"box" jsonschema:"Box id, name or unique id prefix"`
	Code           string            `json:"code" jsonschema:"Source code to run"`
	Language       string            `json:"language,omitempty" jsonschema:"Language of the code"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"Kill the run after this many seconds"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"Standard input for the program"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"Extra environment variables for this run"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"Working directory (absolute path in the box; default: the image's working directory, else /root). In a session it changes the interpreter's working directory before the code runs, and persists"`
	Session        string            `json:"session,omitempty" jsonschema:"Interpreter session to run in (python and javascript): variables, imports, functions and the working directory persist between the calls of a session; another name is a separate interpreter in the same box"`
	Fresh          bool              `json:"fresh,omitempty" jsonschema:"Run in a new process, not in a session (bash and sh always do)"`
	Reset          bool              `json:"reset,omitempty" jsonschema:"Restart the session (clearing its state) before running the code"`
}

// RunCodeOut is run_code's result: a run's result, plus for a session the
// value of the last expression, an exception, rich outputs and the session.
type RunCodeOut struct {
	RunOut
	Result  *string      `json:"result,omitempty" jsonschema:"Text form of the value of the last expression, as a notebook cell shows it; absent when there is none"`
	Error   *CodeError   `json:"error,omitempty" jsonschema:"The exception the code raised (exit_code is then 1); absent on success"`
	Outputs []OutputOut  `json:"outputs" jsonschema:"Rich outputs in order (plots, display(), HTML tables); PNG and JPEG images are also returned as image content"`
	Session *SessionInfo `json:"session,omitempty" jsonschema:"The session the code ran in; absent for fresh runs"`
}

// CodeError is an exception raised by code in a session.
type CodeError struct {
	Name      string `json:"name" jsonschema:"Exception type, e.g. ZeroDivisionError"`
	Message   string `json:"message" jsonschema:"Exception message"`
	Traceback string `json:"traceback" jsonschema:"Traceback text (no colour codes)"`
}

// OutputOut is one rich output.
type OutputOut struct {
	Mime  string `json:"mime" jsonschema:"MIME type"`
	Bytes int64  `json:"bytes" jsonschema:"Size of the output in bytes"`
	Text  string `json:"text,omitempty" jsonschema:"The output, for textual types (text/html, text/markdown, application/json, image/svg+xml, ...)"`
	Image int    `json:"image,omitempty" jsonschema:"For an image returned as image content: its position among the result's images, from 1"`
	// Dropped says the output did not fit the result and is left out.
	Dropped bool `json:"dropped,omitempty" jsonschema:"The output was left out of this result (over the size limits)"`
}

// SessionInfo describes the session a run_code call ran in.
type SessionInfo struct {
	Name           string `json:"name" jsonschema:"Session name"`
	Language       string `json:"language" jsonschema:"Interpreter language"`
	ExecutionCount int    `json:"execution_count" jsonschema:"The interpreter's cell counter after this call"`
	Restarted      bool   `json:"restarted" jsonschema:"The interpreter was (re)started for this call, so earlier state is gone"`
	RestartReason  string `json:"restart_reason,omitempty" jsonschema:"Why it was (re)started: first use, reset, a crash, an out-of-memory kill, a failed interrupt, eviction"`
}

// ExecCommandIn is exec_command's input.
type ExecCommandIn struct {
	Box            string            `json:"box" jsonschema:"Box id, name or unique id prefix"`
	Command        string            `json:"command" jsonschema:"Shell command, run by /bin/sh -c"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"Kill the command after this many seconds"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"Standard input for the command"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"Extra environment variables for this command"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"Working directory (absolute path in the box; default: the image's working directory, else /root)"`
}

// RunOut is the result of run_code and exec_command.
type RunOut struct {
	Stdout     string `json:"stdout" jsonschema:"Standard output (UTF-8; invalid bytes replaced)"`
	Stderr     string `json:"stderr" jsonschema:"Standard error (UTF-8; invalid bytes replaced)"`
	ExitCode   int    `json:"exit_code" jsonschema:"Exit code; -1 when killed by a signal"`
	TimedOut   bool   `json:"timed_out" jsonschema:"The run hit its timeout and was killed"`
	Truncated  bool   `json:"truncated" jsonschema:"Output went over the server's limit; the rest was dropped"`
	DurationMs int64  `json:"duration_ms" jsonschema:"Wall-clock duration in milliseconds"`
	// The limits count encoded bytes (a control byte costs six), so the
	// counts say exactly what was left out.
	StdoutBytes   int64 `json:"stdout_bytes" jsonschema:"Bytes the program wrote to standard output, including any dropped"`
	StdoutDropped int64 `json:"stdout_dropped" jsonschema:"Bytes of standard output not returned in stdout (over the output limits)"`
	StderrBytes   int64 `json:"stderr_bytes" jsonschema:"Bytes the program wrote to standard error, including any dropped"`
	StderrDropped int64 `json:"stderr_dropped" jsonschema:"Bytes of standard error not returned in stderr (over the output limits)"`
	// Refusals of the box's network policy during the call.
	NetworkDenied []NetworkDenial `json:"network_denied,omitempty" jsonschema:"Connections and name lookups the box's network policy refused during this call (deduplicated, at most 20); absent when none"`
}

// WriteFileIn is write_file's input.
type WriteFileIn struct {
	Box      string `json:"box" jsonschema:"Box id, name or unique id prefix"`
	Path     string `json:"path" jsonschema:"Absolute path in the box; parent directories are created"`
	Content  string `json:"content" jsonschema:"File content"`
	Encoding string `json:"encoding,omitempty" jsonschema:"How content is encoded"`
	Mode     string `json:"mode,omitempty" jsonschema:"Octal permission bits, e.g. 0644 or 0755"`
}

// WriteFileOut is write_file's result.
type WriteFileOut struct {
	Path  string `json:"path" jsonschema:"Path written"`
	Bytes int64  `json:"bytes" jsonschema:"Bytes written"`
}

// ReadFileIn is read_file's input.
type ReadFileIn struct {
	Box      string `json:"box" jsonschema:"Box id, name or unique id prefix"`
	Path     string `json:"path" jsonschema:"Absolute path in the box"`
	MaxBytes int64  `json:"max_bytes,omitempty" jsonschema:"Read at most this many bytes"`
}

// ReadFileOut is read_file's result.
type ReadFileOut struct {
	Path      string `json:"path" jsonschema:"Path read"`
	Size      int64  `json:"size" jsonschema:"Bytes returned"`
	Encoding  string `json:"encoding" jsonschema:"text when the bytes are UTF-8 with no NUL byte, else base64"`
	Content   string `json:"content" jsonschema:"File content in that encoding"`
	Truncated bool   `json:"truncated" jsonschema:"The file has more bytes than were returned"`
}

// ListBoxesIn is list_boxes' input.
type ListBoxesIn struct {
	Status string `json:"status,omitempty" jsonschema:"Only boxes with this status"`
}

// BoxSummary is one box in list_boxes' result.
type BoxSummary struct {
	ID         string `json:"id" jsonschema:"Box id"`
	Name       string `json:"name" jsonschema:"Box name, empty when unnamed"`
	Status     string `json:"status" jsonschema:"Lifecycle status"`
	Engine     string `json:"engine" jsonschema:"Engine running the box"`
	Image      string `json:"image" jsonschema:"Guest image"`
	CreatedAt  string `json:"created_at" jsonschema:"Creation time, RFC 3339"`
	LastUsedAt string `json:"last_used_at" jsonschema:"Last use, RFC 3339"`
	// The box's network policy and traffic.
	Network NetworkOut `json:"network" jsonschema:"The box's network policy and bytes sent and received"`
}

// ListBoxesOut is list_boxes' result.
type ListBoxesOut struct {
	Boxes []BoxSummary `json:"boxes" jsonschema:"Your boxes, oldest first"`
}

// DestroyBoxIn is destroy_box's input.
type DestroyBoxIn struct {
	Box string `json:"box" jsonschema:"Box id, name or unique id prefix"`
}

// DestroyBoxOut is destroy_box's result.
type DestroyBoxOut struct {
	ID        string `json:"id" jsonschema:"Id of the destroyed box"`
	Destroyed bool   `json:"destroyed" jsonschema:"Always true on success"`
}
