package tools

// run_code in an interpreter session: argument checks, the call, and its
// result within the budgets of output.go (images count there too).

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// DefaultSession is the session run_code uses when none is named.
const DefaultSession = "default"

// sessionPattern is what a session name may be (sandbox.ValidSessionName).
const sessionPattern = `^[a-z0-9_-]{1,32}$`

// Budgets of a session result, encoded (output.go's units).
const (
	// valueBudget caps the result text and the error text each.
	valueBudget = 256 << 10
	// imagesFirst is the share of dataBudget left to text when there are
	// images to attach: images get the rest.
	textShareWithImages = dataBudget / 3
	// imageBudget is the most of dataBudget a result gives its images.
	imageBudget = dataBudget - textShareWithImages
)

// runCodeTool is run_code: a session for python and javascript unless
// fresh is set, a new process otherwise.
func (s *Server) runCodeTool(ctx context.Context, req mcp.CallToolRequest, in RunCodeIn) (*mcp.CallToolResult, error) {
	lang := in.Language
	if lang == "" {
		lang = "python"
	}
	sessionLang := lang == sandbox.LangPython || lang == sandbox.LangJavaScript
	if in.Fresh || !sessionLang {
		if in.Session != "" || in.Reset {
			why := "fresh is set"
			if !sessionLang {
				why = lang + " runs a new process each call"
			}
			return invalid("session and reset apply to python and javascript sessions; %s", why), nil
		}
		r, err := s.runCode(ctx, req, in)
		if r != nil {
			if out, ok := r.StructuredContent.(RunOut); ok {
				r.StructuredContent = RunCodeOut{RunOut: out, Outputs: []OutputOut{}}
			}
		}
		return r, err
	}
	return s.runSession(ctx, req, in, lang), nil
}

func (s *Server) runSession(ctx context.Context, req mcp.CallToolRequest, in RunCodeIn, lang string) *mcp.CallToolResult {
	name := in.Session
	if name == "" {
		name = DefaultSession
	}
	if !sandbox.ValidSessionName(name) {
		return invalid("session name %q is not valid: 1 to 32 of a-z, 0-9, _ and -", name)
	}
	if in.Stdin != "" {
		return invalid("stdin is for fresh runs: a session has no standard input (pass fresh: true, or read a file written with write_file)")
	}
	if len(in.Code) > MaxCodeBytes {
		return invalid("code is %d bytes; the limit is %d bytes (write a file with write_file and run it from the session)", len(in.Code), MaxCodeBytes)
	}
	if hasNUL(in.Code) {
		return invalid("code contains a NUL byte, which no interpreter accepts in source code")
	}
	if bad := checkExecArgs(in.Env, in.Cwd); bad != nil {
		return bad
	}
	timeoutSecs := in.TimeoutSeconds
	if timeoutSecs == 0 {
		timeoutSecs = DefaultTimeoutSecs
	}
	if timeoutSecs < 1 || timeoutSecs > MaxTimeoutSecs {
		return invalid("timeout_seconds must be between 1 and %d (got %d)", MaxTimeoutSecs, timeoutSecs)
	}
	sr := sandbox.SessionRequest{Name: name, Language: lang, TimeoutMs: int64(timeoutSecs) * 1000, Reset: in.Reset, Cwd: in.Cwd, OutputLimit: s.cfg.OutputLimit}
	for _, k := range sortedKeys(in.Env) {
		sr.Env = append(sr.Env, k+"="+in.Env[k])
	}
	stdout, stderr := outBuffer{limit: int(s.cfg.OutputLimit)}, outBuffer{limit: int(s.cfg.OutputLimit)}
	var outs outputList
	var res *sandbox.SessionResult
	err := s.withProgress(ctx, req, "running", func(setMsg func(string)) error {
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
		var err error
		var b *sandbox.Box
		res, b, err = s.m.RunSession(ctx, Owner(ctx), in.Box, sr, in.Code, sandbox.SessionIO{Stdout: &stdout, Stderr: &stderr, Output: outs.add})
		noteBox(ctx, b)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return errorResult("the call was cancelled; the code was interrupted and the session keeps its state")
		}
		return s.toolError(ctx, "run_code", err)
	}
	return sessionResult(res, name, lang, &stdout, &stderr, &outs, timeoutSecs)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// outputList collects a call's rich outputs (the client bounds each). It
// keeps the bytes only of what a result can carry: images up to
// sandbox.MaxImages whose base64 fits imageBudget together (the most a
// result gives images), text outputs within dataBudget together; of the
// rest it keeps the header (listed as dropped). An output too large for
// what is left is skipped and the next ones still tried, as the result
// does. So a call holds O(dataBudget) on the server however much the
// box sends (256 outputs of 4 MiB each would be 1 GiB).
type outputList struct {
	mu     sync.Mutex
	items  []sandbox.Output // Size: the output's bytes
	data   [][]byte         // nil: not kept
	images int              // images kept
	b64    int              // their base64 bytes
	text   int              // text bytes kept
	result *string
}

func (l *outputList) add(h sandbox.Output, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h.Kind == sandbox.OutputResult && h.Mime == "text/plain" && l.result == nil {
		v := string(data)
		l.result = &v
		return
	}
	if len(l.items) >= sandbox.MaxOutputs {
		return
	}
	h.Size = int64(len(data))
	if data == nil {
		data = []byte{} // nil below means not kept
	}
	switch {
	case sandbox.IsImage(h.Mime):
		if n := base64.StdEncoding.EncodedLen(len(data)); l.images < sandbox.MaxImages && l.b64+n <= imageBudget {
			l.images++
			l.b64 += n
		} else {
			data = nil
		}
	case isTextMime(h.Mime) && l.text+len(data) <= dataBudget:
		l.text += len(data)
	default:
		data = nil
	}
	l.items = append(l.items, h)
	l.data = append(l.data, data)
}

// isTextMime says an output is returned as text.
func isTextMime(mime string) bool {
	return strings.HasPrefix(mime, "text/") || mime == "application/json" || mime == "image/svg+xml" || mime == "application/javascript" ||
		strings.HasSuffix(mime, "+json") || strings.HasSuffix(mime, "+xml")
}

// sessionResult builds a session call's result. structuredContent carries
// the text within dataBudget (a third of it when there are images, which
// get the rest, each as image content); the text content repeats within
// textBudget.
func sessionResult(res *sandbox.SessionResult, name, lang string, stdout, stderr *outBuffer, outs *outputList, timeoutSecs int) *mcp.CallToolResult {
	outs.mu.Lock()
	defer outs.mu.Unlock()
	textShare := dataBudget
	for _, h := range outs.items {
		if sandbox.IsImage(h.Mime) {
			textShare = textShareWithImages
			break
		}
	}
	out := RunCodeOut{Outputs: []OutputOut{}, Session: &SessionInfo{Name: name, Language: lang, ExecutionCount: res.ExecutionCount,
		Restarted: res.Restarted, RestartReason: res.RestartReason}}
	used := 0
	if outs.result != nil {
		v, _ := clip(*outs.result, valueBudget)
		out.Result = &v
		used += encodedLen(v)
	}
	if e := res.Error; e != nil {
		out.Error = &CodeError{}
		out.Error.Name, _ = clip(e.Name, lineBudget)
		out.Error.Message, _ = clip(e.Message, errorBudget)
		out.Error.Traceback, _ = clip(e.Traceback, valueBudget)
		used += encodedLen(out.Error.Name) + encodedLen(out.Error.Message) + encodedLen(out.Error.Traceback)
	}
	so, soTotal := stdout.raw()
	se, seTotal := stderr.raw()
	if res.Truncated || soTotal > int64(len(so)) {
		so, se = trimPartial(so), trimPartial(se)
	}
	no, ne := share(so, se, max(textShare-used, 0))
	used += encodedLen(so[:no]) + encodedLen(se[:ne])
	out.RunOut = RunOut{Stdout: sanitize(so[:no]), Stderr: sanitize(se[:ne]), ExitCode: res.ExitCode, TimedOut: res.TimedOut, DurationMs: res.DurationMs,
		StdoutBytes: max(res.StdoutBytes, soTotal), StderrBytes: max(res.StderrBytes, seTotal)}
	out.StdoutDropped = out.StdoutBytes - int64(no)
	out.StderrDropped = out.StderrBytes - int64(ne)
	out.Truncated = res.Truncated || out.StdoutDropped > 0 || out.StderrDropped > 0 || res.OutputsDropped > 0

	var images []mcp.Content
	imageLeft := dataBudget - max(used, textShare)
	for i, h := range outs.items {
		data := outs.data[i]
		o := OutputOut{Mime: h.Mime, Bytes: h.Size}
		switch {
		case data == nil:
			o.Dropped = true // over what a result can carry, or a binary type
		case sandbox.IsImage(h.Mime):
			if n := base64.StdEncoding.EncodedLen(len(data)); len(images) < sandbox.MaxImages && n <= imageLeft {
				imageLeft -= n
				images = append(images, mcp.NewImageContent(base64.StdEncoding.EncodeToString(data), h.Mime))
				o.Image = len(images)
			} else {
				o.Dropped = true
			}
		case isTextMime(h.Mime):
			text := trimPartial(string(data))
			n, cost := fit(text, max(textShare-used, 0))
			if n < len(text) {
				o.Dropped = true
			} else {
				o.Text = sanitize(text)
				used += cost
			}
		default:
			o.Dropped = true // binary, not an image clients show
		}
		out.Truncated = out.Truncated || o.Dropped
		out.Outputs = append(out.Outputs, o)
	}
	r := mcp.NewToolResultStructured(out, renderSession(out, res, timeoutSecs))
	r.Content = append(r.Content, images...)
	return r
}

func renderSession(o RunCodeOut, res *sandbox.SessionResult, timeoutSecs int) string {
	var b strings.Builder
	switch {
	case res.Ended != "":
		fmt.Fprintf(&b, "%s; the session's state is lost, and the next call starts a new interpreter", res.Ended)
		if res.TimedOut {
			fmt.Fprintf(&b, " (timed out after %ds)", timeoutSecs)
		}
	case o.TimedOut:
		fmt.Fprintf(&b, "timed out after %ds: the code was interrupted; the session keeps its state", timeoutSecs)
	case o.Error != nil:
		fmt.Fprintf(&b, "raised %s: %s", o.Error.Name, clipLine(o.Error.Message))
	default:
		b.WriteString("ok")
	}
	fmt.Fprintf(&b, " (exit code %d, %.2fs)\n", o.ExitCode, float64(o.DurationMs)/1000)
	si := o.Session
	fmt.Fprintf(&b, "session %q (%s), execution %d", si.Name, si.Language, si.ExecutionCount)
	if si.Restarted {
		fmt.Fprintf(&b, "; new interpreter: %s", si.RestartReason)
		if si.RestartReason != "first use" {
			b.WriteString(" (earlier state is gone)")
		}
	}
	b.WriteString("\n")
	left := textBudget
	section := func(title, s string) {
		if s == "" {
			return
		}
		n, cost := fit(s, max(left, 0))
		left -= cost
		if n < len(s) {
			fmt.Fprintf(&b, "--- %s (first %d of %d bytes; the structured result has all of it) ---\n", title, n, len(s))
		} else {
			fmt.Fprintf(&b, "--- %s ---\n", title)
		}
		b.WriteString(s[:n])
		if !strings.HasSuffix(s[:n], "\n") {
			b.WriteString("\n")
		}
	}
	if o.Result != nil {
		section("result", *o.Result)
	}
	no, ne := share(o.Stdout, o.Stderr, max(left/2, 0))
	section("stdout", o.Stdout[:no])
	section("stderr", o.Stderr[:ne])
	if o.Error != nil {
		section("error", o.Error.Traceback)
	}
	if len(o.Outputs) > 0 {
		b.WriteString("--- outputs ---\n")
		for i, x := range o.Outputs {
			fmt.Fprintf(&b, "%d. %s, %d bytes", i+1, x.Mime, x.Bytes)
			switch {
			case x.Image > 0:
				fmt.Fprintf(&b, ": image %d of this result", x.Image)
			case x.Dropped:
				b.WriteString(": left out (over the result's size limits, or a binary type)")
			default:
				b.WriteString(": text in the structured result's outputs")
			}
			b.WriteString("\n")
		}
	}
	if o.Truncated {
		fmt.Fprintf(&b, "(output over the server's limits: returned %d of %d stdout bytes and %d of %d stderr bytes",
			o.StdoutBytes-o.StdoutDropped, o.StdoutBytes, o.StderrBytes-o.StderrDropped, o.StderrBytes)
		if res.OutputsDropped > 0 {
			fmt.Fprintf(&b, "; %d outputs dropped in the box (over %d images or %d MiB per image)", res.OutputsDropped, sandbox.MaxImages, sandbox.MaxImageBytes>>20)
		}
		b.WriteString(")\n")
	}
	return b.String()
}
