package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// These tests run real interpreters on the host: Debian's python3 with
// IPython (and matplotlib, pandas), and node. They are skipped
// where those are missing; the same code runs in a real box in
// sandbox/jail's session tests.

const hostPython = "/usr/bin/python3"

func needPython(t *testing.T, modules ...string) {
	t.Helper()
	mods := strings.Join(append([]string{"IPython", "matplotlib_inline"}, modules...), ", ")
	if err := exec.Command(hostPython, "-c", "import "+mods).Run(); err != nil {
		t.Skipf("needs %s with %s (apt-get install python3-ipython python3-matplotlib python3-pandas)", hostPython, mods)
	}
}

func needNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
}

type logW struct{ t testing.TB }

func (w logW) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	cfg.Python = hostPython
	cfg.Cwd = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(logW{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := New(cfg)
	t.Cleanup(m.Close)
	return m
}

// sink records what a call produced.
type sink struct {
	mu      sync.Mutex
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	outputs []recorded
}

type recorded struct {
	h    wire.OutputHeader
	data []byte
}

func (s *sink) Stdout(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stdout.Write(p)
	return nil
}
func (s *sink) Stderr(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stderr.Write(p)
	return nil
}
func (s *sink) Output(h wire.OutputHeader, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outputs = append(s.outputs, recorded{h, append([]byte{}, data...)})
	return nil
}

func (s *sink) result() string {
	for _, o := range s.outputs {
		if o.h.Kind == wire.OutputResult && o.h.Mime == "text/plain" {
			return string(o.data)
		}
	}
	return ""
}

type call struct {
	name, lang, code string
	timeout          time.Duration
	reset            bool
	cwd              string
	startCwd         string
	startEnv         []string
	uid, gid         *uint32
}

func run(t *testing.T, m *Manager, c call) (*wire.SessionResult, *sink) {
	t.Helper()
	return runCtx(t, context.Background(), m, c)
}

func runCtx(t *testing.T, ctx context.Context, m *Manager, c call) (*wire.SessionResult, *sink) {
	t.Helper()
	if c.name == "" {
		c.name = "default"
	}
	if c.lang == "" {
		c.lang = wire.LangPython
	}
	s := &sink{}
	res, err := m.Run(ctx, &wire.SessionRequest{Name: c.name, Language: c.lang, CodeBytes: int64(len(c.code)), TimeoutMs: c.timeout.Milliseconds(), Reset: c.reset, Cwd: c.cwd,
		StartCwd: c.startCwd, StartEnv: c.startEnv, StartUID: c.uid, StartGID: c.gid}, c.code, s)
	if err != nil {
		t.Fatalf("Run(%q): %v", c.code, err)
	}
	return res, s
}

func TestPythonSession(t *testing.T) {
	needPython(t, "matplotlib", "pandas")
	m := newManager(t, Config{})

	res, s := run(t, m, call{code: "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\nprint('made')"})
	if !res.Restarted || res.RestartReason != ReasonFirstUse || res.ExitCode != 0 || s.stdout.String() != "made\n" {
		t.Fatalf("first call: %+v stdout %q stderr %q", res, s.stdout.String(), s.stderr.String())
	}
	res, s = run(t, m, call{code: "df.a.sum()"})
	if res.Restarted || res.ExitCode != 0 || s.result() != "6" || res.ExecutionCount != 2 {
		t.Fatalf("state not kept: %+v result %q stderr %q", res, s.result(), s.stderr.String())
	}

	res, _ = run(t, m, call{code: "1/0"})
	if res.ExitCode != 1 || res.Error == nil || res.Error.Name != "ZeroDivisionError" || strings.Contains(res.Error.Traceback, "\x1b[") || !strings.Contains(res.Error.Traceback, "1/0") {
		t.Fatalf("1/0: %+v %+v", res, res.Error)
	}

	code := "import matplotlib.pyplot as plt\n%config InlineBackend.print_figure_kwargs = {'bbox_inches': None}\nfig = plt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 2, 3])"
	res, s = run(t, m, call{code: code})
	var pngs [][]byte
	for _, o := range s.outputs {
		if o.h.Mime == "image/png" {
			pngs = append(pngs, o.data)
		}
	}
	if res.ExitCode != 0 || len(pngs) != 1 {
		t.Fatalf("plot: %+v, outputs %v, stderr %q", res, s.outputs, s.stderr.String())
	}
	img, err := png.Decode(bytes.NewReader(pngs[0]))
	if err != nil || img.Bounds().Dx() != 200 || img.Bounds().Dy() != 150 {
		t.Fatalf("png: %v %v", err, img.Bounds())
	}
}

// TestPythonWithoutIPython: a Python without IPython (here: site-packages
// left out with -S) makes a session fail at once with an error that says
// what to install, not a start timeout or a bare exit code.
func TestPythonWithoutIPython(t *testing.T) {
	needPython(t)
	wrapper := filepath.Join(t.TempDir(), "python3")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+hostPython+" -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, Config{})
	m.cfg.Python = wrapper
	_, err := m.Run(context.Background(), &wire.SessionRequest{Language: wire.LangPython, Name: "default"}, "1", &sink{})
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != wire.CodeNotFound || !strings.Contains(werr.Message, "python3-ipython") {
		t.Fatalf("err = %v", err)
	}
}

// TestPythonImportsFromCwd: as in Jupyter, modules in the working
// directory import; the driver's own imports do not look there (a file
// named like one of them does not break the session).
func TestPythonImportsFromCwd(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	cwd := m.cfg.Cwd
	for name, src := range map[string]string{"boxlite_mod.py": "X = 7\n", "json.py": "raise SystemExit('planted json')\n", "socket.py": "raise SystemExit('planted socket')\n"} {
		if err := os.WriteFile(filepath.Join(cwd, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code := "import boxlite_mod\nboxlite_mod.X"
	if res, s := run(t, m, call{code: code}); s.result() != "7" {
		t.Fatalf("%+v %+v %q", res, res.Error, s.result())
	}
}

// TestPythonIPythonSemantics: what makes the session IPython and not bare
// Python: top-level await, magics, shell escapes, Out history, rich
// reprs, display(), input() refused as in a kernel without stdin.
func TestPythonIPythonSemantics(t *testing.T) {
	needPython(t, "pandas")
	m := newManager(t, Config{})
	for _, tc := range []struct {
		name, code, stdout, result, errName string
		mimes                               []string
	}{
		{"await", "import asyncio\nawait asyncio.sleep(0.01)\n'awaited'", "", "'awaited'", "", nil},
		{"asyncio.run", "import asyncio\nasync def f(): return 3\nasyncio.run(f())", "", "3", "", nil},
		{"magic", "%time x = sum(range(10))\nx", "", "45", "", nil},
		{"shell escape", "!echo from-the-shell", "from-the-shell", "", "", nil},
		{"Out", "Out[3] + 1", "", "46", "", nil},
		{"html repr", "import pandas as pd\npd.DataFrame({'a': [1]})", "", "   a\n0  1", "", []string{"text/plain", "text/html"}},
		{"display", "from IPython.display import display, Markdown\ndisplay(Markdown('**hi**'))", "", "", "", []string{"text/markdown"}},
		{"input", "input('name? ')", "", "", "StdinNotImplementedError", nil},
		{"syntax", "def f(:", "", "", "SyntaxError", nil},
		{"exit", "exit()\n'still here'", "", "'still here'", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, s := run(t, m, call{code: tc.code})
			var mimes []string
			for _, o := range s.outputs {
				mimes = append(mimes, o.h.Mime)
			}
			gotErr := ""
			if res.Error != nil {
				gotErr = res.Error.Name
			}
			if gotErr != tc.errName || !strings.Contains(s.stdout.String(), tc.stdout) || s.result() != tc.result || res.Restarted != (tc.name == "await") ||
				(tc.mimes != nil && strings.Join(mimes, ",") != strings.Join(tc.mimes, ",")) {
				t.Fatalf("%+v %+v: stdout %q stderr %q result %q outputs %v", res, res.Error, s.stdout.String(), s.stderr.String(), s.result(), mimes)
			}
		})
	}
	// exit() ended the interpreter after its call, as a kernel's does.
	if res, s := run(t, m, call{code: "'new'"}); !res.Restarted || res.RestartReason != "the interpreter exited with code 0" || s.result() != "'new'" {
		t.Fatalf("after exit(): %+v %q", res, s.result())
	}
}

func TestPythonInterruptKeepsState(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	run(t, m, call{code: "x = 41"})
	res, _ := run(t, m, call{code: "while True: pass", timeout: 500 * time.Millisecond})
	if !res.TimedOut || res.Error == nil || res.Error.Name != "KeyboardInterrupt" || res.Ended != "" {
		t.Fatalf("timeout: %+v %+v", res, res.Error)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	res, _ = runCtx(t, ctx, m, call{code: "import time\ntime.sleep(60)"})
	if !res.Cancelled || res.Error == nil || res.Error.Name != "KeyboardInterrupt" {
		t.Fatalf("cancel: %+v %+v", res, res.Error)
	}
	res, s := run(t, m, call{code: "x + 1"})
	if res.Restarted || s.result() != "42" {
		t.Fatalf("state lost: %+v %q", res, s.result())
	}
}

func TestPythonInterruptFails(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{InterruptGrace: 300 * time.Millisecond})
	run(t, m, call{code: "x = 1"})
	// A SIGINT handler that ignores the interrupt: only a kill stops it.
	res, _ := run(t, m, call{code: "import signal, time\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True: time.sleep(0.01)", timeout: 300 * time.Millisecond})
	if !res.TimedOut || res.Ended != ReasonInterruptFailed || res.Error == nil {
		t.Fatalf("%+v %+v", res, res.Error)
	}
	res, s := run(t, m, call{code: "'x' in globals()"})
	if !res.Restarted || res.RestartReason != ReasonInterruptFailed || s.result() != "False" {
		t.Fatalf("after: %+v %q", res, s.result())
	}
}

func TestPythonCrashRestarts(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	run(t, m, call{code: "print('before', flush=True)\nimport os\nos.system('echo from-a-child')"})
	res, _ := run(t, m, call{code: "import os\nos._exit(3)"})
	// The death's report carries the interpreter's last own output, without
	// the agent's sync markers.
	if res.ExitCode != 3 || res.Ended == "" || res.Error == nil || res.Error.Name != "InterpreterDied" || strings.Contains(res.Error.Traceback, "boxlite-sync") {
		t.Fatalf("crash: %+v %+v", res, res.Error)
	}
	res, s := run(t, m, call{code: "2 * 21"})
	if !res.Restarted || !strings.Contains(res.RestartReason, "exited with code 3") || s.result() != "42" {
		t.Fatalf("after crash: %+v %q", res, s.result())
	}
	res, _ = run(t, m, call{code: "y = 1"})
	res, s = run(t, m, call{code: "'y' in globals()", reset: true})
	if !res.Restarted || res.RestartReason != ReasonReset || s.result() != "False" {
		t.Fatalf("reset: %+v %q", res, s.result())
	}
}

func TestSessionsAreSeparateAndEvicted(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{MaxSessions: 2})
	run(t, m, call{name: "a", code: "v = 'a'"})
	run(t, m, call{name: "b", code: "v = 'b'"})
	_, s := run(t, m, call{name: "a", code: "v"})
	if s.result() != "'a'" {
		t.Fatalf("a sees %q", s.result())
	}
	// A third session evicts b, the least recently used.
	run(t, m, call{name: "c", code: "v = 'c'"})
	res, s := run(t, m, call{name: "b", code: "'v' in globals()"})
	if !res.Restarted || !strings.HasPrefix(res.RestartReason, "evicted") || s.result() != "False" {
		t.Fatalf("b after eviction: %+v %q", res, s.result())
	}
}

func TestCallsRunInOrder(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	run(t, m, call{code: "log = []"})
	var wg sync.WaitGroup
	const n = 8
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runCtx(t, context.Background(), m, call{code: fmt.Sprintf("import time; time.sleep(0.02); log.append(%d)", i)})
		}()
		time.Sleep(5 * time.Millisecond) // arrival order
	}
	wg.Wait()
	_, s := run(t, m, call{code: "log"})
	if s.result() != "[0, 1, 2, 3, 4, 5, 6, 7]" {
		t.Fatalf("order: %s", s.result())
	}
}

func TestJavaScriptSession(t *testing.T) {
	needNode(t)
	m := newManager(t, Config{})
	js := func(code string) (*wire.SessionResult, *sink) {
		return run(t, m, call{lang: wire.LangJavaScript, code: code})
	}
	res, s := js("let a = 20; const f = (x) => x + 1; function g() { return a * 2 }\nconsole.log('hi')")
	if res.ExitCode != 0 || s.stdout.String() != "hi\n" || !res.Restarted {
		t.Fatalf("first: %+v %q %q", res, s.stdout.String(), s.stderr.String())
	}
	res, s = js("f(g()) + 1")
	if res.ExitCode != 0 || s.result() != "42" {
		t.Fatalf("state: %+v %q %v", res, s.result(), res.Error)
	}
	res, s = js("const r = await Promise.resolve(5); r * 2")
	if res.ExitCode != 0 || s.result() != "10" {
		t.Fatalf("await: %+v %q %+v", res, s.result(), res.Error)
	}
	res, s = js("r")
	if s.result() != "5" {
		t.Fatalf("await binding: %q %+v", s.result(), res.Error)
	}
	// A cell run again may declare again (top-level let, const and class
	// become globals); classes persist.
	res, s = js("const again = 1; class Point { constructor(x) { this.x = x } }")
	res, s = js("const again = 2; new Point(again).x")
	if res.ExitCode != 0 || s.result() != "2" {
		t.Fatalf("redeclare: %+v %q %+v", res, s.result(), res.Error)
	}
	res, _ = js("null.x")
	if res.ExitCode != 1 || res.Error == nil || res.Error.Name != "TypeError" || res.Error.Traceback == "" {
		t.Fatalf("error: %+v %+v", res, res.Error)
	}
	res, _ = run(t, m, call{lang: wire.LangJavaScript, code: "while (true) {}", timeout: 300 * time.Millisecond})
	if !res.TimedOut || res.Error == nil || res.Error.Name != "Interrupted" || res.Ended != "" {
		t.Fatalf("sync interrupt: %+v %+v", res, res.Error)
	}
	res, _ = run(t, m, call{lang: wire.LangJavaScript, code: "await new Promise(() => {})", timeout: 300 * time.Millisecond})
	if !res.TimedOut || res.Error == nil || res.Error.Name != "Interrupted" || res.Ended != "" {
		t.Fatalf("async interrupt: %+v %+v", res, res.Error)
	}
	res, s = js("a")
	if res.Restarted || s.result() != "20" {
		t.Fatalf("after interrupts: %+v %q", res, s.result())
	}
	res, _ = js("process.exit(4)")
	if res.ExitCode != 4 || res.Ended == "" {
		t.Fatalf("exit: %+v", res)
	}
	res, s = js("typeof a")
	if !res.Restarted || s.result() != "'undefined'" {
		t.Fatalf("after exit: %+v %q", res, s.result())
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

// TestErrorDoesNotAbortNext: the call after an exception runs (ipykernel
// aborts requests that arrive just after an error when stop_on_error is set).
func TestErrorDoesNotAbortNext(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	for i := 0; i < 30; i++ {
		run(t, m, call{code: "1/0"})
		if res, s := run(t, m, call{code: "6 * 7"}); res.Error != nil || s.result() != "42" {
			t.Fatalf("round %d: the call after an error: %+v %+v", i, res, res.Error)
		}
	}
}

// TestBoxDefaults: the box's defaults (StartCwd, StartEnv) start an
// interpreter and reach a running one only when they change, so what the
// code changed persists; an explicit cwd applies before its call.
func TestBoxDefaults(t *testing.T) {
	for _, lang := range []struct {
		name, set, show string
		need            func(*testing.T)
	}{
		{wire.LangPython, "import os\nos.chdir(%q)\nos.environ['BX'] = '2'", "import os\nprint(os.getcwd(), os.environ.get('BX'))",
			func(t *testing.T) { needPython(t) }},
		{wire.LangJavaScript, "process.chdir(%q); process.env.BX = '2'", "console.log(process.cwd(), process.env.BX)", needNode},
	} {
		t.Run(lang.name, func(t *testing.T) {
			lang.need(t)
			m := newManager(t, Config{})
			a, b := t.TempDir(), t.TempDir()
			steps := []struct {
				code, cwd, startCwd string
				startEnv            []string
				want                string
			}{
				{code: lang.show, startCwd: a, startEnv: []string{"BX=1"}, want: a + " 1"},
				{code: fmt.Sprintf(lang.set, b), startCwd: a, startEnv: []string{"BX=1"}},
				{code: lang.show, startCwd: a, startEnv: []string{"BX=1"}, want: b + " 2"},         // persisted
				{code: lang.show, startCwd: a, startEnv: []string{"BX=3"}, want: b + " 3"},         // new env default (a claim)
				{code: lang.show, cwd: a, startCwd: a, startEnv: []string{"BX=3"}, want: a + " 3"}, // explicit cwd
			}
			for i, st := range steps {
				res, s := run(t, m, call{lang: lang.name, code: st.code, cwd: st.cwd, startCwd: st.startCwd, startEnv: st.startEnv})
				if got := strings.TrimSpace(s.stdout.String()); res.ExitCode != 0 || got != st.want {
					t.Fatalf("step %d: got %q, want %q (%+v %+v)", i, got, st.want, res, res.Error)
				}
			}
		})
	}
}

// TestPythonOutputArrives: nothing a call writes is lost or lands in
// another call: writes in pieces, without a newline, from a thread, to
// stderr, from a child process and native code straight to fd 1 and 2
// (the driver's own streams, passed on before the call ends), from a forked
// child, a large write, and output right before an error.
func TestPythonOutputArrives(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	var pieces strings.Builder
	for i := range 500 {
		fmt.Fprintf(&pieces, "%d ", i)
	}
	for _, tc := range []struct {
		name, code, stdout, stderr, result string
	}{
		{"pieces", "for i in range(500): print(i, end=' ')\n'done'", pieces.String(), "", "'done'"},
		{"no newline", "import sys\nsys.stdout.write('partial')\n1", "partial", "", "1"},
		{"thread", "import threading\nt = threading.Thread(target=lambda: print('from a thread'))\nt.start(); t.join()\n2", "from a thread\n", "", "2"},
		{"stderr", "import sys\nprint('out')\nprint('err', file=sys.stderr)\n3", "out\n", "err\n", "3"},
		{"child process", "import os, subprocess\nos.system('echo from sh; echo to stderr >&2')\nsubprocess.run(['printf', 'no newline'])\n4", "from sh\nno newline", "to stderr\n", "4"},
		{"native", "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.write(1, b'native\\n', 7)\n5", "native\n", "", "5"},
		{"forked child", "import os\npid = os.fork()\nif pid == 0:\n    print('from the child', flush=True)\n    os._exit(0)\nos.waitpid(pid, 0)\n6", "from the child\n", "", "6"},
		{"large", "print('x' * 3_000_000)\n7", strings.Repeat("x", 3_000_000) + "\n", "", "7"},
		{"binary-looking", "import os\nos.write(1, b'a\\x00b\\x00boxlite\\x00')\n8", "a\x00b\x00boxlite\x00", "", "8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, s := run(t, m, call{code: tc.code})
			if res.ExitCode != 0 || s.stdout.String() != tc.stdout || s.stderr.String() != tc.stderr || s.result() != tc.result {
				t.Fatalf("%+v %+v: stdout %.200q stderr %q result %q", res, res.Error, s.stdout.String(), s.stderr.String(), s.result())
			}
		})
	}
	// Output before an error comes with it, and the next call is clean.
	res, s := run(t, m, call{code: "print('before')\nraise ValueError('boom')"})
	if res.Error == nil || res.Error.Name != "ValueError" || res.Error.Message != "boom" || s.stdout.String() != "before\n" || !strings.Contains(res.Error.Traceback, "ValueError") {
		t.Fatalf("error: %+v %+v stdout %q", res, res.Error, s.stdout.String())
	}
	if strings.Contains(res.Error.Traceback, "\x1b[") {
		t.Errorf("traceback has colour codes: %q", res.Error.Traceback)
	}
	if res, s := run(t, m, call{code: "9"}); res.Error != nil || s.result() != "9" || s.stdout.Len() != 0 {
		t.Fatalf("after the error: %+v stdout %q", res, s.stdout.String())
	}
}

// TestPythonLargeOutputs: output whose encoding is much larger than its
// characters (emoji, control characters) and representations over the
// size any output may have cost the call some outputs (counted), never the
// session.
func TestPythonLargeOutputs(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	run(t, m, call{code: "x = 1"})
	for _, tc := range []struct {
		name, code  string
		stdoutBytes int
		dropped     int
	}{
		{"emoji", "print('\\U0001F600' * 1_000_000)", 4_000_001, 0},
		{"control characters", "print('\\x01' * 3_000_000)", 3_000_001, 0},
		{"huge html", "from IPython.display import display, HTML\ndisplay(HTML('<p>' + '\\x02' * (7 << 20)))", 0, 1},
		{"huge repr with text", "class R:\n    def _repr_html_(self): return 'x' * (5 << 20)\n    def _repr_markdown_(self): return 'y' * (5 << 20)\n    def __repr__(self): return 'small'\nR()", 0, 2}, // one over the bundle's budget (driver), one over MaxOutputBytes (agent)
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, s := run(t, m, call{code: tc.code})
			if res.Restarted || res.Ended != "" || res.ExitCode != 0 || s.stdout.Len() != tc.stdoutBytes || res.OutputsDropped != tc.dropped || (tc.dropped > 0) != res.Truncated {
				t.Fatalf("%+v %+v: stdout %d bytes, outputs %d", res, res.Error, s.stdout.Len(), len(s.outputs))
			}
			if res, s := run(t, m, call{code: "x"}); res.Restarted || s.result() != "1" {
				t.Fatalf("the session after it: %+v %q", res, s.result())
			}
		})
	}
}

// TestPythonDriverHostile: code that writes to the driver's control socket
// (fd 3) — garbage, forged or repeated "done" lines, a line over the
// bound — cannot make the agent hang; the worst it does is end or confuse
// its own interpreter, which later calls replace or get past.
func TestPythonDriverHostile(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{})
	for _, tc := range []struct{ name, code string }{
		{"garbage", "import os\nos.write(3, b'not json\\n')\nimport time; time.sleep(1)"},
		{"forged done", "import os\nos.write(3, b'{\"t\":\"done\",\"id\":999}\\n')\n1"},
		{"done again", "import os\nfor _ in range(3):\n    for i in range(1, 50): os.write(3, b'{\"t\":\"done\",\"id\":%d}\\n' % i)\n1"},
		{"huge line", "import os\nos.write(3, b'{\"t\":\"out\",\"s\":\"' + b'x' * (12 << 20))\nimport time; time.sleep(1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := m.Run(ctx, &wire.SessionRequest{Language: wire.LangPython, Name: "default", TimeoutMs: 20_000}, tc.code, &sink{})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: exit %d ended %q", tc.name, res.ExitCode, res.Ended)
			// Forged "done" lines for later job ids may answer the next
			// calls (the code spoils its own session); the agent must not
			// hang, and a call soon gets its real answer.
			for i := 0; ; i++ {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				res2, s := runCtx(t, cctx, m, call{code: "'alive'"})
				ccancel()
				if res2.Cancelled {
					t.Fatalf("call %d after it hung: %+v", i, res2)
				}
				if res2.ExitCode == 0 && s.result() == "'alive'" {
					break
				}
				if i == 100 {
					t.Fatalf("no real answer in 100 calls after it: %+v %+v", res2, res2.Error)
				}
			}
		})
	}
}

// TestSessionUser: an interpreter runs as the box's user (StartUID and
// StartGID, without supplementary groups), as an exec does; one that runs
// as another user than a call asks for is restarted as that one.
func TestSessionUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run interpreters as another user")
	}
	for _, lang := range []struct {
		name, show string
		need       func(*testing.T)
	}{
		{wire.LangPython, "import os\nprint(os.getuid(), os.getgid(), len(set(os.getgroups()) - {os.getgid()}), os.getcwd())", func(t *testing.T) { needPython(t) }},
		{wire.LangJavaScript, "console.log(process.getuid(), process.getgid(), process.getgroups().filter((g) => g !== process.getgid()).length, process.cwd())", needNode},
	} {
		t.Run(lang.name, func(t *testing.T) {
			lang.need(t)
			m := newManager(t, Config{})
			nobody := uint32(65534)
			steps := []struct {
				uid, gid *uint32
				want     string
				reason   string // "": the interpreter keeps running
			}{
				{&nobody, &nobody, "65534 65534 0 /", ReasonFirstUse},
				{&nobody, &nobody, "65534 65534 0 /", ""},
				{nil, nil, "0 0", ReasonUserChanged},
				{&nobody, &nobody, "65534 65534 0 /", ReasonUserChanged},
			}
			for i, st := range steps {
				res, s := run(t, m, call{lang: lang.name, code: lang.show, startCwd: "/", uid: st.uid, gid: st.gid})
				got := strings.TrimSpace(s.stdout.String())
				if res.ExitCode != 0 || !strings.HasPrefix(got, st.want) || res.Restarted != (st.reason != "") || res.RestartReason != st.reason {
					t.Fatalf("step %d: got %q, want %q, restart %q (%+v %+v; stderr %q)", i, got, st.want, st.reason, res, res.Error, s.stderr.String())
				}
			}
		})
	}
}
