package tools

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Sessions through the real MCP server, on the fake engine, whose agent
// runs this host's interpreters: Debian's /usr/bin/python3 with
// IPython, matplotlib and pandas (skipped without them), and node.

// pyEnv makes a Python session use Debian's python3 rather than whatever
// comes first in the test's PATH.
var pyEnv = map[string]any{"PATH": "/usr/bin:/bin"}

func needHostPython(t *testing.T) {
	t.Helper()
	if exec.Command("/usr/bin/python3", "-c", "import IPython, matplotlib_inline, matplotlib, pandas").Run() != nil {
		t.Skip("needs /usr/bin/python3 with python3-ipython, python3-matplotlib and python3-pandas")
	}
}

func needHostNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
}

func runOut(t *testing.T, r *mcp.CallToolResult) RunCodeOut {
	t.Helper()
	if r.IsError {
		t.Fatalf("isError: %s", textOf(r))
	}
	out, ok := r.StructuredContent.(RunCodeOut)
	if !ok {
		t.Fatalf("structured content is %T", r.StructuredContent)
	}
	return out
}

func imagesOf(r *mcp.CallToolResult) []mcp.ImageContent {
	var out []mcp.ImageContent
	for _, c := range r.Content {
		if im, ok := c.(mcp.ImageContent); ok {
			out = append(out, im)
		}
	}
	return out
}

func TestRunCodePythonSession(t *testing.T) {
	needHostPython(t)
	srv, box := boxServer(t, Config{})
	call := func(args map[string]any) *mcp.CallToolResult {
		args["box"] = box
		if _, ok := args["env"]; !ok {
			args["env"] = pyEnv
		}
		_, r := callTool(t, srv, "run_code", args)
		return r
	}
	out := runOut(t, call(map[string]any{"code": "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})"}))
	if out.Session == nil || !out.Session.Restarted || out.Session.RestartReason != "first use" || out.Session.Name != "default" {
		t.Fatalf("first call: %+v", out.Session)
	}
	r := call(map[string]any{"code": "df.a.sum()"})
	out = runOut(t, r)
	if out.Result == nil || *out.Result != "6" || out.Session.Restarted || !strings.Contains(textOf(r), "--- result ---\n6\n") {
		t.Fatalf("second call: %+v %q", out, textOf(r))
	}

	r = call(map[string]any{"code": "1/0"})
	out = runOut(t, r)
	if r.IsError || out.ExitCode != 1 || out.Error == nil || out.Error.Name != "ZeroDivisionError" {
		t.Fatalf("1/0: %+v", out)
	}

	r = call(map[string]any{"code": "import matplotlib.pyplot as plt\n%config InlineBackend.print_figure_kwargs = {'bbox_inches': None}\nplt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 3, 2])"})
	out = runOut(t, r)
	ims := imagesOf(r)
	if len(ims) != 1 || len(out.Outputs) != 1 || out.Outputs[0].Image != 1 || out.Outputs[0].Mime != "image/png" {
		t.Fatalf("plot: %d images, outputs %+v", len(ims), out.Outputs)
	}
	data, _ := base64.StdEncoding.DecodeString(ims[0].Data)
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil || img.Bounds().Dx() != 200 || img.Bounds().Dy() != 150 || ims[0].MIMEType != "image/png" {
		t.Fatalf("png: %v %v", err, img)
	}

	// Another session does not see df; reset clears the default one.
	out = runOut(t, call(map[string]any{"code": "'df' in globals()", "session": "other"}))
	if *out.Result != "False" || out.Session.Name != "other" {
		t.Fatalf("other session: %+v", out)
	}
	out = runOut(t, call(map[string]any{"code": "'df' in globals()", "reset": true}))
	if *out.Result != "False" || !out.Session.Restarted || out.Session.RestartReason != "reset" {
		t.Fatalf("reset: %+v %+v", out, out.Session)
	}
	// fresh is a new process, without session fields.
	out = runOut(t, call(map[string]any{"code": "print(1+1)", "fresh": true}))
	if out.Session != nil || out.Stdout != "2\n" || out.Outputs == nil {
		t.Fatalf("fresh: %+v", out)
	}
}

func TestRunCodeSessionArguments(t *testing.T) {
	srv, box := boxServer(t, Config{})
	for _, tc := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"language": "bash", "session": "x"}, "session and reset apply to python and javascript"},
		{map[string]any{"language": "sh", "reset": true}, "session and reset apply"},
		{map[string]any{"fresh": true, "session": "x"}, "fresh is set"},
		{map[string]any{"session": "Bad Name"}, "session name"},
		{map[string]any{"stdin": "x"}, "stdin is for fresh runs"},
	} {
		tc.args["box"], tc.args["code"] = box, "1"
		_, r := callTool(t, srv, "run_code", tc.args)
		if !r.IsError || !strings.Contains(textOf(r), tc.want) {
			t.Errorf("%v: %v %q", tc.args, r.IsError, textOf(r))
		}
	}
}

// TestSessionResultBounded: a session printing megabytes and showing many
// large images still gives a response under messageLimit, with the images
// that fit attached, the rest listed as dropped, and truncated set.
func TestSessionResultBounded(t *testing.T) {
	needHostNode(t)
	srv, box := boxServer(t, Config{OutputLimit: 16 << 20})
	code := `const img = Buffer.alloc(600 << 10, 7); img.set([0x89, 0x50, 0x4e, 0x47], 0);
for (let i = 0; i < 8; i++) display(img);
process.stdout.write("<".repeat(3 << 20));
display("<b>" + "x".repeat(1 << 20) + "</b>", "text/html"); 1`
	raw, r := callTool(t, srv, "run_code", map[string]any{"box": box, "language": "javascript", "code": code})
	out := runOut(t, r)
	if len(raw) > messageLimit {
		t.Fatalf("response of %d bytes", len(raw))
	}
	attached, dropped := 0, 0
	for _, o := range out.Outputs {
		if o.Image > 0 {
			attached++
		}
		if o.Dropped {
			dropped++
		}
	}
	if attached == 0 || dropped == 0 || len(imagesOf(r)) != attached || !out.Truncated || out.StdoutDropped == 0 || len(out.Outputs) != 9 {
		t.Fatalf("attached %d dropped %d images %d truncated %v stdout dropped %d outputs %d", attached, dropped, len(imagesOf(r)), out.Truncated, out.StdoutDropped, len(out.Outputs))
	}
}

func TestRunCodeJavaScriptSession(t *testing.T) {
	needHostNode(t)
	srv, box := boxServer(t, Config{})
	js := func(code string) RunCodeOut {
		_, r := callTool(t, srv, "run_code", map[string]any{"box": box, "language": "javascript", "code": code})
		return runOut(t, r)
	}
	js("let n = 40; function inc(x) { return x + 1 }")
	out := js("inc(n) + 1")
	if out.Result == nil || *out.Result != "42" || out.Session.Language != "javascript" {
		t.Fatalf("%+v", out)
	}
}

// TestOutputListHoldsOnlyWhatFits: a box that sends the most outputs the
// wire allows, each of the largest size, costs the server about one
// result's worth of memory, not all of it (64 images of 4 MiB: 256 MiB
// held and 340 MiB of base64 made before). The result still carries the
// images that fit and lists the rest as dropped.
func TestOutputListHoldsOnlyWhatFits(t *testing.T) {
	img := make([]byte, sandbox.MaxImageBytes)
	copy(img, "\x89PNG")
	html := bytes.Repeat([]byte("x"), sandbox.MaxImageBytes)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var l outputList
	for i := 0; i < 64; i++ {
		l.add(sandbox.Output{Kind: sandbox.OutputDisplay, Mime: "image/png"}, bytes.Clone(img))
		l.add(sandbox.Output{Kind: sandbox.OutputDisplay, Mime: "text/html"}, bytes.Clone(html))
	}
	small := bytes.Clone(img[:100<<10])
	l.add(sandbox.Output{Kind: sandbox.OutputDisplay, Mime: "image/png"}, small)
	runtime.GC()
	held := 0
	for _, d := range l.data {
		held += len(d)
	}
	r := sessionResult(&sandbox.SessionResult{}, "default", "python", &outBuffer{}, &outBuffer{}, &l, 60)
	runtime.ReadMemStats(&after)
	// The test's own 128 copies are 512 MiB of allocations; what the
	// list and the result add must stay near dataBudget.
	if held > 2*dataBudget {
		t.Errorf("the list holds %d bytes of output data, want at most %d", held, 2*dataBudget)
	}
	if extra := int64(after.TotalAlloc-before.TotalAlloc) - 129*int64(len(img)); extra > 8*dataBudget {
		t.Errorf("building the result allocated %d bytes beyond the outputs themselves", extra)
	}
	out := runOut(t, r)
	if len(out.Outputs) != 129 || len(imagesOf(r)) != 1 || out.Outputs[128].Image != 1 || !out.Outputs[0].Dropped || out.Outputs[0].Bytes != int64(len(img)) || !out.Truncated {
		t.Fatalf("outputs %d images %d last %+v first %+v", len(out.Outputs), len(imagesOf(r)), out.Outputs[128], out.Outputs[0])
	}
}

// An image too large for a result's image share does not use the share
// up: a smaller one after it is still attached, as before outputs were
// held back on arrival.
func TestOutputListSkipsWhatCannotFit(t *testing.T) {
	png := func(n int) []byte { b := make([]byte, n); copy(b, "\x89PNG"); return b }
	var l outputList
	l.add(sandbox.Output{Kind: sandbox.OutputDisplay, Mime: "image/png"}, png(2300<<10)) // its base64 fits dataBudget, not the image share
	l.add(sandbox.Output{Kind: sandbox.OutputDisplay, Mime: "image/png"}, png(150<<10))
	r := sessionResult(&sandbox.SessionResult{}, "default", "python", &outBuffer{}, &outBuffer{}, &l, 60)
	out := runOut(t, r)
	if len(imagesOf(r)) != 1 || !out.Outputs[0].Dropped || out.Outputs[1].Image != 1 {
		t.Fatalf("images %d, outputs %+v", len(imagesOf(r)), out.Outputs)
	}
}
