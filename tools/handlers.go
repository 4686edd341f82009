package tools

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

func invalid(format string, args ...any) *mcp.CallToolResult {
	return mcp.NewToolResultError(fmt.Sprintf(format, args...))
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (s *Server) createBox(ctx context.Context, req mcp.CallToolRequest, in CreateBoxIn) (*mcp.CallToolResult, error) {
	if in.Engine != "" && !contains(Engines, in.Engine) {
		return invalid("engine must be one of %s (got %q)", strings.Join(Engines, ", "), in.Engine), nil
	}
	if in.TTLSeconds < 0 || in.TTLSeconds > MaxTTLSeconds || in.IdleTimeoutSeconds < 0 || in.IdleTimeoutSeconds > MaxTTLSeconds {
		return invalid("ttl_seconds and idle_timeout_seconds must be between 0 and %d", MaxTTLSeconds), nil
	}
	var b *sandbox.Box
	err := s.withProgress(ctx, req, "starting the box", func(func(string)) error {
		var err error
		b, err = s.m.Create(ctx, Owner(ctx), sandbox.CreateRequest{
			Name: in.Name, Image: in.Image, Engine: in.Engine, CPUs: in.CPUs, MemoryMiB: in.MemoryMiB,
			Network: in.Network, Env: in.Env, TTL: time.Duration(in.TTLSeconds) * time.Second,
			IdleTimeout: time.Duration(in.IdleTimeoutSeconds) * time.Second,
		})
		return err
	})
	if err != nil {
		return s.toolError(ctx, "create_box", err), nil
	}
	out := BoxOut{ID: b.ID, Name: b.Name, Status: string(b.Status), Engine: b.Engine, Image: b.Image, CreatedAt: rfc3339(b.CreatedAt)}
	ref := b.ID
	if b.Name != "" {
		ref = fmt.Sprintf("%s (name %q)", b.ID, b.Name)
	}
	text := fmt.Sprintf("Box %s is %s on the %s engine (image %s, %d CPU, %d MiB). Use box=%q with run_code.",
		ref, b.Status, b.Engine, b.Image, b.Spec.CPUs, b.Spec.MemoryMiB, firstNonEmpty(b.Name, b.ID))
	return mcp.NewToolResultStructured(out, text), nil
}

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
	argv := append(append([]string{}, it.argv...), in.Code)
	var cleanup string
	if len(in.Code) > inlineLimit {
		p := "/tmp/.boxlite-run-" + persist.NewID() + it.ext
		if _, _, err := s.m.WriteFile(ctx, Owner(ctx), in.Box, wire.WriteFileReq{Path: p, Mode: 0o600, Size: int64(len(in.Code))}, strings.NewReader(in.Code)); err != nil {
			return s.toolError(ctx, "run_code", err), nil
		}
		argv, cleanup = []string{it.argv[0], p}, p
	}
	res := s.run(ctx, req, "run_code", in.Box, argv, in.TimeoutSeconds, in.Stdin, in.Env, in.Cwd)
	if cleanup != "" {
		s.m.Exec(context.WithoutCancel(ctx), Owner(ctx), in.Box, wire.ExecRequest{Argv: []string{"rm", "-f", cleanup}, TimeoutMs: 10_000}, client.ExecIO{})
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
	return s.run(ctx, req, "exec_command", in.Box, []string{"/bin/sh", "-c", in.Command}, in.TimeoutSeconds, in.Stdin, in.Env, in.Cwd), nil
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// outBuffer collects one stream and remembers its last complete line.
type outBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	last string
}

func (o *outBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	b := bytes.TrimRight(o.buf.Bytes(), "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	o.last = string(b[:min(len(b), 200)])
	return len(p), nil
}

func (o *outBuffer) lastLine() string { o.mu.Lock(); defer o.mu.Unlock(); return o.last }
func (o *outBuffer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.ToValidUTF8(o.buf.String(), "\uFFFD")
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
	if len(env) > MaxEnvVars {
		return invalid("at most %d environment variables", MaxEnvVars)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		if !envKeyRE.MatchString(k) {
			return invalid("environment variable name %q is not valid", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var envList []string
	for _, k := range keys {
		envList = append(envList, k+"="+env[k])
	}
	if cwd == "" {
		cwd = "/root"
	} else if !path.IsAbs(cwd) {
		return invalid("cwd must be an absolute path (got %q)", cwd)
	}
	er := wire.ExecRequest{Argv: argv, Env: envList, Cwd: cwd, Stdin: []byte(stdin), TimeoutMs: int64(timeoutSecs) * 1000, OutputLimit: s.cfg.OutputLimit}
	var stdout, stderr outBuffer
	var res *wire.ExecResult
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
		res, _, err = s.m.Exec(ctx, Owner(ctx), box, er, client.ExecIO{Stdout: &stdout, Stderr: &stderr})
		return err
	})
	if err != nil {
		return s.toolError(ctx, tool, err)
	}
	out := RunOut{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: res.ExitCode, TimedOut: res.TimedOut, Truncated: res.Truncated, DurationMs: res.DurationMs}
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
		b.WriteString("; output truncated at the server's limit")
	}
	b.WriteString("\n")
	if o.Stdout != "" {
		b.WriteString("--- stdout ---\n" + o.Stdout)
		if !strings.HasSuffix(o.Stdout, "\n") {
			b.WriteString("\n")
		}
	}
	if o.Stderr != "" {
		b.WriteString("--- stderr ---\n" + o.Stderr)
		if !strings.HasSuffix(o.Stderr, "\n") {
			b.WriteString("\n")
		}
	}
	if o.Stdout == "" && o.Stderr == "" {
		b.WriteString("(no output)\n")
	}
	return b.String()
}

// withProgress runs fn; when the client sent a progress token it sends a
// progress notification every ProgressEvery with the elapsed time and the
// latest message fn set.
func (s *Server) withProgress(ctx context.Context, req mcp.CallToolRequest, what string, fn func(setMsg func(string)) error) error {
	var mu sync.Mutex
	msg := ""
	setMsg := func(m string) { mu.Lock(); msg = m; mu.Unlock() }
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil {
		return fn(setMsg)
	}
	srv := server.ServerFromContext(ctx)
	if srv == nil {
		return fn(setMsg)
	}
	token := req.Params.Meta.ProgressToken
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	sent := false
	go func() {
		defer close(finished)
		t := time.NewTicker(s.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				el := time.Since(start)
				mu.Lock()
				m := fmt.Sprintf("%s %.0fs", what, el.Seconds())
				if msg != "" {
					m += ": " + msg
				}
				mu.Unlock()
				if err := srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
					"progressToken": token, "progress": el.Seconds(), "message": m,
				}); err == nil {
					sent = true
				}
			}
		}
	}()
	err := fn(setMsg)
	close(done)
	<-finished
	if sent {
		// mcp-go v1.2.1 can write the last notification after the response,
		// where clients drop it; a short pause keeps them in order.
		time.Sleep(5 * time.Millisecond)
	}
	return err
}

func (s *Server) writeFile(ctx context.Context, req mcp.CallToolRequest, in WriteFileIn) (*mcp.CallToolResult, error) {
	if !path.IsAbs(in.Path) {
		return invalid("path must be absolute (got %q)", in.Path), nil
	}
	var data []byte
	switch in.Encoding {
	case "", "text":
		data = []byte(in.Content)
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return invalid("content is not valid base64: %v", err), nil
		}
	default:
		return invalid("encoding must be text or base64 (got %q)", in.Encoding), nil
	}
	if len(data) > MaxWriteBytes {
		return invalid("content is %d bytes; the limit is %d bytes", len(data), MaxWriteBytes), nil
	}
	mode := fs.FileMode(0o644)
	if in.Mode != "" {
		v, err := strconv.ParseUint(in.Mode, 8, 32)
		if err != nil || v > 0o7777 {
			return invalid("mode must be octal permission bits like 0644 (got %q)", in.Mode), nil
		}
		mode = fs.FileMode(v)
	}
	res, _, err := s.m.WriteFile(ctx, Owner(ctx), in.Box, wire.WriteFileReq{Path: in.Path, Mode: mode, Size: int64(len(data))}, bytes.NewReader(data))
	if err != nil {
		return s.toolError(ctx, "write_file", err), nil
	}
	out := WriteFileOut{Path: path.Clean(in.Path), Bytes: res.Bytes}
	return mcp.NewToolResultStructured(out, fmt.Sprintf("wrote %d bytes to %s", out.Bytes, out.Path)), nil
}

func (s *Server) readFile(ctx context.Context, req mcp.CallToolRequest, in ReadFileIn) (*mcp.CallToolResult, error) {
	if !path.IsAbs(in.Path) {
		return invalid("path must be absolute (got %q)", in.Path), nil
	}
	limit := in.MaxBytes
	if limit == 0 {
		limit = DefaultReadBytes
	}
	if limit < 1 || limit > MaxReadBytes {
		return invalid("max_bytes must be between 1 and %d (got %d)", MaxReadBytes, in.MaxBytes), nil
	}
	var buf bytes.Buffer
	res, _, err := s.m.ReadFile(ctx, Owner(ctx), in.Box, wire.ReadFileReq{Path: in.Path, MaxBytes: limit}, &buf)
	if err != nil {
		return s.toolError(ctx, "read_file", err), nil
	}
	data := buf.Bytes()
	out := ReadFileOut{Path: path.Clean(in.Path), Size: int64(len(data)), Truncated: res.Truncate}
	mime := http.DetectContentType(data)
	isImage := mime == "image/png" || mime == "image/jpeg" || mime == "image/gif"
	if utf8.Valid(data) && !isImage {
		out.Encoding, out.Content = "text", string(data)
	} else {
		out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(data)
	}
	text := fmt.Sprintf("%s: %d bytes", out.Path, out.Size)
	if out.Truncated {
		text += " (truncated; the file is longer)"
	}
	if out.Encoding == "text" {
		text += "\n" + out.Content
	} else {
		text += fmt.Sprintf(", %s, returned as base64", mime)
	}
	r := mcp.NewToolResultStructured(out, text)
	if isImage && !out.Truncated {
		r.Content = append(r.Content, mcp.NewImageContent(out.Content, mime))
	}
	return r, nil
}

func (s *Server) listBoxes(ctx context.Context, req mcp.CallToolRequest, in ListBoxesIn) (*mcp.CallToolResult, error) {
	boxes, err := s.m.List(ctx, Owner(ctx), sandbox.Status(in.Status))
	if err != nil {
		return s.toolError(ctx, "list_boxes", err), nil
	}
	out := ListBoxesOut{Boxes: []BoxSummary{}}
	var b strings.Builder
	for _, x := range boxes {
		out.Boxes = append(out.Boxes, BoxSummary{ID: x.ID, Name: x.Name, Status: string(x.Status), Engine: x.Engine, Image: x.Image,
			CreatedAt: rfc3339(x.CreatedAt), LastUsedAt: rfc3339(x.LastUsedAt)})
		name := x.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(&b, "%s  %-20s %-10s %-5s %s", x.ID, name, x.Status, x.Engine, x.Image)
		if x.StatusReason != "" {
			fmt.Fprintf(&b, "  (%s)", x.StatusReason)
		}
		b.WriteString("\n")
	}
	if len(boxes) == 0 {
		b.WriteString("no boxes; create one with create_box\n")
	}
	return mcp.NewToolResultStructured(out, b.String()), nil
}

func (s *Server) destroyBox(ctx context.Context, req mcp.CallToolRequest, in DestroyBoxIn) (*mcp.CallToolResult, error) {
	b, err := s.m.Destroy(ctx, Owner(ctx), in.Box)
	if err != nil {
		return s.toolError(ctx, "destroy_box", err), nil
	}
	out := DestroyBoxOut{ID: b.ID, Destroyed: true}
	return mcp.NewToolResultStructured(out, fmt.Sprintf("destroyed box %s", b.ID)), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
