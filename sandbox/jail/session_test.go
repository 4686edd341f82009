package jail_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Interpreter sessions in a real jail box, on the default image's
// ipykernel and node, through the manager.

type sessionOut struct {
	res    *sandbox.SessionResult
	stdout string
	result string
	images int
}

func sessionIn(t *testing.T, m *sandbox.Manager, box string, req sandbox.SessionRequest, code string) sessionOut {
	t.Helper()
	if req.Name == "" {
		req.Name = "default"
	}
	if req.Language == "" {
		req.Language = sandbox.LangPython
	}
	if req.TimeoutMs == 0 {
		req.TimeoutMs = 120_000
	}
	var o sessionOut
	var stdout bytes.Buffer
	var mu sync.Mutex
	res, _, err := m.RunSession(context.Background(), "t", box, req, code, sandbox.SessionIO{Stdout: &stdout, Output: func(h sandbox.Output, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case h.Kind == sandbox.OutputResult && h.Mime == "text/plain":
			o.result = string(data)
		case sandbox.IsImage(h.Mime):
			o.images++
		}
	}})
	if err != nil {
		t.Fatalf("session %s %q: %v", req.Name, code, err)
	}
	o.res, o.stdout = res, stdout.String()
	return o
}

func TestJailSessions(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	ctx := context.Background()
	m := server(t, home)
	destroyAll(t, m)
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "interp", MemoryMiB: 512})
	if err != nil {
		t.Fatal(err)
	}
	py := func(code string) sessionOut { return sessionIn(t, m, b.ID, sandbox.SessionRequest{}, code) }

	if o := py("import pandas as pd, numpy as np\ndf = pd.DataFrame({'a': np.arange(4)})"); !o.res.Restarted || o.res.ExitCode != 0 {
		t.Fatalf("first: %+v", o.res)
	}
	if o := py("df.a.sum()"); o.result != "6" {
		t.Fatalf("state: %q %+v", o.result, o.res)
	}
	// The working directory the code changes persists (the box's default
	// is the start directory, not set again before every call); cwd
	// changes it, and that persists too.
	py("import os\nos.chdir('/tmp')")
	if o := py("os.getcwd()"); o.result != "'/tmp'" {
		t.Fatalf("chdir did not persist: %q %+v", o.result, o.res)
	}
	if o := sessionIn(t, m, b.ID, sandbox.SessionRequest{Cwd: "/"}, "os.getcwd()"); o.result != "'/'" {
		t.Fatalf("cwd: %q %+v", o.result, o.res)
	}
	if o := py("os.getcwd()"); o.result != "'/'" {
		t.Fatalf("cwd did not persist: %q %+v", o.result, o.res)
	}
	if o := py("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"); o.images != 1 {
		t.Fatalf("plot: %+v", o)
	}

	// A memory hog hits the box's limit; the next call works.
	o := py("blocks = []\nwhile True: blocks.append(b'x' * (32 << 20))")
	if o.res.Ended == "" && (o.res.Error == nil || o.res.Error.Name != "MemoryError") {
		t.Fatalf("hog: %+v %+v", o.res, o.res.Error)
	}
	t.Logf("memory hog: %s", o.res.Ended)
	if o := py("40 + 2"); o.result != "42" {
		t.Fatalf("after hog: %+v", o.res)
	}

	// JavaScript keeps let bindings and functions.
	js := func(code string) sessionOut {
		return sessionIn(t, m, b.ID, sandbox.SessionRequest{Language: sandbox.LangJavaScript}, code)
	}
	js("let k = 20; function twice(x) { return 2 * x }")
	if o := js("twice(k) + 2"); o.result != "42" {
		t.Fatalf("js: %+v %+v", o.res, o.res.Error)
	}
	js("process.chdir('/tmp')")
	if o := js("process.cwd()"); !strings.Contains(o.result, "/tmp") {
		t.Fatalf("js chdir did not persist: %q %+v", o.result, o.res)
	}

	// 20 calls over 4 sessions at once: each session counts its own.
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("p%d", i%4)
			o := sessionIn(t, m, b.ID, sandbox.SessionRequest{Name: name}, fmt.Sprintf("n = globals().get('n', 0) + 1\n(%q, n)", name))
			if o.res.ExitCode != 0 || !strings.HasPrefix(o.result, fmt.Sprintf("('%s', ", name)) {
				errs <- fmt.Sprintf("%s: %+v %q", name, o.res, o.result)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for i := 0; i < 4; i++ {
		if o := sessionIn(t, m, b.ID, sandbox.SessionRequest{Name: fmt.Sprintf("p%d", i)}, "n"); o.result != "5" {
			t.Errorf("p%d ran %q calls, want 5", i, o.result)
		}
	}

	// The session lives in the box: a new server reattaches to it.
	py("survives = 'yes'")
	m.Close()
	m2 := server(t, home)
	if o := sessionIn(t, m2, b.ID, sandbox.SessionRequest{}, "survives"); o.result != "'yes'" || o.res.Restarted {
		t.Fatalf("after a server restart: %+v %q", o.res, o.result)
	}
	destroyAll(t, m2)
}

// A call that waits behind the session's long earlier call until the host's
// limit for it runs out ends alone, with a clear error: the box answered,
// so its connection stays, and the earlier call and the box's other calls
// go on. So does one whose turn comes before its limit and which the
// limit then interrupts: it times out and the session keeps its state.
// (The host used to take the agent's answer to its cancel for a frozen
// box and close the connection, failing every call on the box.)
func TestSessionQueuedCallOutlivesItsLimit(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	ctx := context.Background()
	m := serverWith(t, home, func(c *sandbox.Config) { c.SessionGrace = time.Second })
	destroyAll(t, m)
	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "queue", MemoryMiB: 512})
	if err != nil {
		t.Fatal(err)
	}
	sessionIn(t, m, b.ID, sandbox.SessionRequest{}, "import time\nx = 1") // the interpreter is up
	type ended struct {
		res    *sandbox.SessionResult
		stdout string
		err    error
	}
	runAsync := func(timeoutMs int64, code string, w *signalWriter) chan ended {
		c := make(chan ended, 1)
		go func() {
			res, _, err := m.RunSession(ctx, "t", b.ID, sandbox.SessionRequest{Name: "default", Language: sandbox.LangPython, TimeoutMs: timeoutMs}, code, sandbox.SessionIO{Stdout: w})
			c <- ended{res, w.String(), err}
		}()
		return c
	}
	started := make(chan struct{})
	long := runAsync(60_000, "print('started', flush=True)\ntime.sleep(6)\nprint('finished')", &signalWriter{want: "started", seen: started})
	select {
	case <-started:
	case e := <-long:
		t.Fatalf("the long call ended first: %+v %v", e.res, e.err)
	}
	// Its limit (1.5 s) ends while it waits.
	_, _, err = m.RunSession(ctx, "t", b.ID, sandbox.SessionRequest{Name: "default", Language: sandbox.LangPython, TimeoutMs: 500}, "1", sandbox.SessionIO{})
	if !errors.Is(err, sandbox.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "still busy with an earlier call") {
		t.Fatalf("queued call: %v, want the session-busy deadline error", err)
	}
	// Its limit (9 s) ends after its turn came (about 4 s from now), before
	// its own timeout (8 s from then) would have interrupted it.
	late := runAsync(8_000, "time.sleep(30)", &signalWriter{})
	// The box's other calls work meanwhile.
	if o := shIn(t, m, b.ID, "echo other"); o.stdout != "other\n" {
		t.Fatalf("exec beside the queued call: %+v", o)
	}
	e := <-long
	if e.err != nil || e.res.ExitCode != 0 || e.stdout != "started\nfinished\n" {
		t.Fatalf("the long call: %+v %q %v", e.res, e.stdout, e.err)
	}
	if e := <-late; e.err != nil || !e.res.TimedOut || e.res.Ended != "" {
		t.Fatalf("the call the host's limit interrupted: %+v %v", e.res, e.err)
	}
	if o := sessionIn(t, m, b.ID, sandbox.SessionRequest{}, "x"); o.result != "1" || o.res.Restarted {
		t.Fatalf("the session after them: %+v %q", o.res, o.result)
	}
}

// signalWriter collects output and closes seen once it contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
