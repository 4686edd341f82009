package tools

// run_code and exec_command: argument checks, the run itself, and the
// result (capped by the budgets of output.go).

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/internal/names"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// interpreters maps run_code languages to the program, its inline-code
// flag, and the file extension used for code too big for argv.
var interpreters = map[string]struct {
	argv []string
	ext  string
}{
	"python":     {[]string{"python3", "-c"}, ".py"},
	"javascript": {[]string{"node", "-e"}, ".js"},
	"bash":       {[]string{"bash", "-c"}, ".sh"},
	"sh":         {[]string{"sh", "-c"}, ".sh"},
}

// inlineLimit is the largest code passed on the command line (the kernel
// caps one argument at 128 KiB); bigger code goes through a file.
const inlineLimit = 100 << 10

func (s *Server) runCode(ctx context.Context, req mcp.CallToolRequest, in RunCodeIn) (*mcp.CallToolResult, error) {
	lang := in.Language
	if lang == "" {
		lang = "python"
	}
	it, ok := interpreters[lang]
	if !ok {
		return invalid("language must be one of %s (got %q)", strings.Join(Languages, ", "), in.Language), nil
	}
	if len(in.Code) > MaxCodeBytes {
		return invalid("code is %d bytes; the limit is %d bytes (write a file with write_file and run it with exec_command)", len(in.Code), MaxCodeBytes), nil
	}
	if hasNUL(in.Code) {
		return invalid("code contains a NUL byte, which no interpreter accepts in source code"), nil
	}
	if bad := checkExecArgs(in.Env, in.Cwd); bad != nil {
		return bad, nil
	}
	argv := append(append([]string{}, it.argv...), in.Code)
	var cleanup string
	if len(in.Code) > inlineLimit {
		p := "/tmp/.boxlite-run-" + rand.Text() + it.ext
		if _, _, err := s.m.WriteFile(ctx, Owner(ctx), in.Box, sandbox.WriteFileRequest{Path: p, Mode: 0o600, Size: int64(len(in.Code))}, strings.NewReader(in.Code)); err != nil {
			return s.toolError(ctx, "run_code", err), nil
		}
		argv, cleanup = []string{it.argv[0], p}, p
	}
	res := s.run(ctx, req, "run_code", in.Box, argv, in.TimeoutSeconds, in.Stdin, in.Env, in.Cwd)
	if cleanup != "" {
		s.m.Exec(context.WithoutCancel(ctx), Owner(ctx), in.Box, sandbox.ExecRequest{Argv: []string{"rm", "-f", cleanup}, TimeoutMs: 10_000}, sandbox.ExecIO{})
	}
	return res, nil
}

func (s *Server) execCommand(ctx context.Context, req mcp.CallToolRequest, in ExecCommandIn) (*mcp.CallToolResult, error) {
	if len(in.Command) > MaxCodeBytes {
		return invalid("command is %d bytes; the limit is %d bytes", len(in.Command), MaxCodeBytes), nil
	}
	if strings.TrimSpace(in.Command) == "" {
		return invalid("command is empty"), nil
	}
	if hasNUL(in.Command) {
		return invalid("command contains a NUL byte, which a program's arguments cannot hold"), nil
	}
	return s.run(ctx, req, "exec_command", in.Box, []string{"/bin/sh", "-c", in.Command}, in.TimeoutSeconds, in.Stdin, in.Env, in.Cwd), nil
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// checkEnv refuses what a process environment cannot hold, naming the
// variable: a bad name, or a value with a NUL byte (the kernel takes
// environment entries as C strings).
func checkEnv(env map[string]string) *mcp.CallToolResult {
	if len(env) > MaxEnvVars {
		return invalid("at most %d environment variables", MaxEnvVars)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !names.ValidEnvKey(k) {
			return invalid("environment variable name %q is not valid (letters, digits and _, not starting with a digit)", k)
		}
		if hasNUL(env[k]) {
			return invalid("environment variable %s: the value contains a NUL byte, which an environment cannot hold", k)
		}
	}
	return nil
}

// checkExecArgs checks the env and cwd arguments of run_code and exec_command.
func checkExecArgs(env map[string]string, cwd string) *mcp.CallToolResult {
	if bad := checkEnv(env); bad != nil {
		return bad
	}
	if hasNUL(cwd) {
		return invalid("cwd contains a NUL byte, which a path cannot hold")
	}
	if cwd != "" && !path.IsAbs(cwd) {
		return invalid("cwd must be an absolute path (got %q)", cwd)
	}
	return nil
}

// outBuffer collects one stream, up to limit bytes (the agent enforces the
// same limit; this holds against an agent that does not), counts what it
// received, and remembers the start of the last line for progress messages.
type outBuffer struct {
	limit int
	mu    sync.Mutex
	buf   bytes.Buffer
	total int64
	line  []byte // start of the line being written
	prev  string // start of the last complete non-empty line
}

// lineKeep is how much of a line progress messages show.
const lineKeep = 200

func (o *outBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.total += int64(len(p))
	o.buf.Write(p[:min(len(p), max(o.limit-o.buf.Len(), 0))])
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		seg := rest
		if i >= 0 {
			seg = rest[:i]
		}
		o.line = append(o.line, seg[:min(len(seg), lineKeep-len(o.line))]...)
		if i < 0 {
			break
		}
		if len(o.line) > 0 {
			o.prev, o.line = string(o.line), o.line[:0]
		}
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (o *outBuffer) lastLine() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.line) > 0 {
		return clipLine(string(o.line))
	}
	return clipLine(o.prev)
}

// raw returns the bytes kept and the count received.
func (o *outBuffer) raw() (string, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String(), o.total
}

// run executes argv in the box with the common run_code/exec_command options.
func (s *Server) run(ctx context.Context, req mcp.CallToolRequest, tool, box string, argv []string, timeoutSecs int, stdin string, env map[string]string, cwd string) *mcp.CallToolResult {
	if timeoutSecs == 0 {
		timeoutSecs = DefaultTimeoutSecs
	}
	if timeoutSecs < 1 || timeoutSecs > MaxTimeoutSecs {
		return invalid("timeout_seconds must be between 1 and %d (got %d)", MaxTimeoutSecs, timeoutSecs)
	}
	if len(stdin) > MaxStdinBytes {
		return invalid("stdin is %d bytes; the limit is %d bytes", len(stdin), MaxStdinBytes)
	}
	if bad := checkExecArgs(env, cwd); bad != nil {
		return bad
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var envList []string
	for _, k := range keys {
		envList = append(envList, k+"="+env[k])
	}
	er := sandbox.ExecRequest{Argv: argv, Env: envList, Cwd: cwd, Stdin: []byte(stdin), TimeoutMs: int64(timeoutSecs) * 1000, OutputLimit: s.cfg.OutputLimit}
	stdout, stderr := outBuffer{limit: int(s.cfg.OutputLimit)}, outBuffer{limit: int(s.cfg.OutputLimit)}
	var res *sandbox.ExecResult
	err := s.withProgress(ctx, req, "running", func(setMsg func(string)) error {
		var err error
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(s.cfg.ProgressEvery / 2):
					setMsg(firstNonEmpty(stderr.lastLine(), stdout.lastLine()))
				}
			}
		}()
		var b *sandbox.Box
		res, b, err = s.m.Exec(ctx, Owner(ctx), box, er, sandbox.ExecIO{Stdout: &stdout, Stderr: &stderr})
		noteBox(ctx, b)
		return err
	})
	if err != nil {
		if tool == "run_code" {
			if r := s.interpreterMissing(ctx, box, argv[0], envList, err); r != nil {
				return r
			}
		}
		return s.toolError(ctx, tool, err)
	}
	return runResult(res, &stdout, &stderr, timeoutSecs)
}

// runResult builds the result of a run: structuredContent carries the
// output up to dataBudget, the text repeats it up to textBudget.
func runResult(res *sandbox.ExecResult, stdout, stderr *outBuffer, timeoutSecs int) *mcp.CallToolResult {
	so, soTotal := stdout.raw()
	se, seTotal := stderr.raw()
	soTotal, seTotal = max(res.StdoutBytes, soTotal), max(res.StderrBytes, seTotal)
	// A stream cut by a raw-byte limit may end in half a character.
	if soTotal > int64(len(so)) {
		so = trimPartial(so)
	}
	if seTotal > int64(len(se)) {
		se = trimPartial(se)
	}
	no, ne := share(so, se, dataBudget)
	out := RunOut{Stdout: sanitize(so[:no]), Stderr: sanitize(se[:ne]), ExitCode: res.ExitCode, TimedOut: res.TimedOut, DurationMs: res.DurationMs,
		StdoutBytes: soTotal, StderrBytes: seTotal}
	out.StdoutDropped = out.StdoutBytes - int64(no)
	out.StderrDropped = out.StderrBytes - int64(ne)
	out.Truncated = res.Truncated || out.StdoutDropped > 0 || out.StderrDropped > 0
	return mcp.NewToolResultStructured(out, renderRun(out, res.Signal, timeoutSecs))
}

func renderRun(o RunOut, signal string, timeoutSecs int) string {
	var b strings.Builder
	switch {
	case o.TimedOut:
		fmt.Fprintf(&b, "timed out after %ds and was killed", timeoutSecs)
	case signal != "":
		fmt.Fprintf(&b, "killed by %s", signal)
		if signal == "SIGKILL" {
			b.WriteString(" (out of memory?)")
		}
	default:
		fmt.Fprintf(&b, "exit code %d", o.ExitCode)
	}
	fmt.Fprintf(&b, " in %.2fs", float64(o.DurationMs)/1000)
	if o.Truncated {
		fmt.Fprintf(&b, "; output over the server's limit: returned %d of %d stdout bytes and %d of %d stderr bytes",
			o.StdoutBytes-o.StdoutDropped, o.StdoutBytes, o.StderrBytes-o.StderrDropped, o.StderrBytes)
	}
	b.WriteString("\n")
	no, ne := share(o.Stdout, o.Stderr, textBudget)
	if no < len(o.Stdout) || ne < len(o.Stderr) {
		b.WriteString("(too long to repeat here: below is the start of each stream; the structured result's stdout and stderr hold all returned output)\n")
	}
	stream := func(name, s string, n int) {
		if s == "" {
			return
		}
		if n < len(s) {
			fmt.Fprintf(&b, "--- %s (first %d of %d bytes) ---\n", name, n, len(s))
		} else {
			fmt.Fprintf(&b, "--- %s ---\n", name)
		}
		b.WriteString(s[:n])
		if !strings.HasSuffix(s[:n], "\n") {
			b.WriteString("\n")
		}
	}
	stream("stdout", o.Stdout, no)
	stream("stderr", o.Stderr, ne)
	if o.Stdout == "" && o.Stderr == "" {
		b.WriteString("(no output)\n")
	}
	return b.String()
}
