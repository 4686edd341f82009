package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// What code in a box can make its own interpreter send: none of it may
// end the interpreter (each message must fit the agent's line bound and
// parse) or the call (a mime type the wire cannot carry is dropped).
func TestDriverMessagesStayReadable(t *testing.T) {
	for _, tc := range []struct {
		name, lang, code string
		dropped          int // -1: some
	}{
		{"python bundle of control characters", wire.LangPython,
			"from IPython.display import publish_display_data\npublish_display_data({'text/plain': '\\x01' * (1 << 20), 'text/html': '\\x01' * (1 << 20)})", 2}, // each 6 MiB encoded
		{"python huge exception", wire.LangPython, "raise ValueError('x' * (6 << 20))", 0},
		// 1.2 million keys of at most 3 bytes with empty values: what a
		// bundle entry adds beyond its key and value (quotes, colon, comma)
		// must count.
		{"python a million tiny representations", wire.LangPython, `from IPython.display import publish_display_data
A = [chr(c) for c in range(33, 127) if c not in (34, 92)]
B = [chr(c) for c in range(0x80, 0x800)]
C = [chr(c) for c in range(0x800, 0x10000) if not 0xd800 <= c < 0xe000]
publish_display_data({k: b'' for k in [a + b + c for a in A for b in A for c in A] + [a + b for a in A for b in B] + [b + a for a in A for b in B] + C})`, -1},
		{"python NaN in JSON", wire.LangPython, "from IPython.display import JSON, display\ndisplay(JSON({'a': float('nan'), 'b': [float('inf')]}))", 0},
		{"python empty mime", wire.LangPython, "from IPython.display import publish_display_data\npublish_display_data({'': 'x'})", 1},
		{"python long mime", wire.LangPython, "from IPython.display import publish_display_data\npublish_display_data({'a' * 300: 'x'})", 1},
		{"javascript huge write", wire.LangJavaScript, "process.stdout.write('x'.repeat(8 << 20)); 1", 0},
		{"javascript huge display", wire.LangJavaScript, "display(Buffer.alloc(7 << 20, 1))", 1},
		{"javascript long mime", wire.LangJavaScript, "display('x', 'a'.repeat(300))", 1},
		{"javascript empty mime", wire.LangJavaScript, "display('x', '')", 0}, // '' means "no mime": shown as text
		{"javascript huge throw", wire.LangJavaScript, "throw new Error('\\x01'.repeat(8 << 20))", 0},
		{"javascript huge value", wire.LangJavaScript, "'\\x01'.repeat(8 << 20)", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.lang == wire.LangPython {
				needPython(t)
			} else {
				needNode(t)
			}
			m := newManager(t, Config{})
			run(t, m, call{lang: tc.lang, code: "x = 1"}) // a global in both languages
			res, s := run(t, m, call{lang: tc.lang, code: tc.code})
			if res.Ended != "" || (tc.dropped >= 0 && res.OutputsDropped != tc.dropped) || (tc.dropped < 0 && res.OutputsDropped == 0) {
				t.Fatalf("%+v %+v: %d outputs", res, res.Error, len(s.outputs))
			}
			if strings.Contains(tc.name, "NaN") && (len(s.outputs) != 1 || string(s.outputs[0].data) != `{"a":null,"b":[null]}`) {
				t.Fatalf("NaN: %+v", s.outputs)
			}
			if strings.Contains(tc.name, "exception") || strings.Contains(tc.name, "throw") {
				if res.Error == nil || len(res.Error.Message) > 20<<10 || !strings.Contains(res.Error.Message, "cut at") {
					t.Fatalf("error: %+v", res.Error)
				}
			}
			if res, s := run(t, m, call{lang: tc.lang, code: "x"}); res.Restarted || s.result() != "1" {
				t.Fatalf("the session after it: %+v %q", res, s.result())
			}
		})
	}
}

// An interpreter that leaves its process group still gets the interrupt,
// and one that also ignores it is still killed: a signal to its old group
// alone reached nothing, and the call (and its session) hung forever.
func TestInterpreterLeavingItsGroup(t *testing.T) {
	needPython(t)
	leave := "import os, signal, time\nchild = os.fork()\nif child == 0:\n    os.setpgid(0, 0)\n    time.sleep(60)\n    os._exit(0)\ntime.sleep(0.2)\nos.setpgid(0, child)\n"
	for _, tc := range []struct {
		name, code string
		ended      string
	}{
		{"interrupted", leave + "try:\n    while True: pass\nfinally:\n    os.kill(child, 9)", ""},
		{"killed", leave + "signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", ReasonInterruptFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The grace covers IPython's traceback and the call's end,
			// which take a while on a loaded machine.
			m := newManager(t, Config{InterruptGrace: 3 * time.Second})
			run(t, m, call{code: "x = 1"})
			done := make(chan *wire.SessionResult, 1)
			go func() {
				res, _ := run(t, m, call{code: tc.code, timeout: time.Second})
				done <- res
			}()
			select {
			case res := <-done:
				if !res.TimedOut || res.Ended != tc.ended {
					t.Fatalf("%+v %+v", res, res.Error)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the call did not end")
			}
			res, s := run(t, m, call{code: "'x' in globals()"})
			if want := map[string]string{"": "True", ReasonInterruptFailed: "False"}[tc.ended]; s.result() != want || res.Restarted != (tc.ended != "") {
				t.Fatalf("after: %+v %q", res, s.result())
			}
		})
	}
}

// A call whose code ends just as the interrupt's grace runs out, and whose
// interpreter is killed then, says its state is gone (it used to say the
// state was kept, and only the next call learnt otherwise). The driver here is a fake (a Python script speaking
// the drivers' protocol) that ignores SIGINT, answers "done" within the
// grace and writes its stdout marker only after the grace.
func TestKilledAtGraceEndSaysSo(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake.py")
	os.WriteFile(fake, []byte(`import json, os, signal, socket, sys, time
hit = []
signal.signal(signal.SIGINT, lambda *a: hit.append(time.monotonic()))
ctl = socket.socket(fileno=3)
ctl.sendall(b'{"t":"ready"}\n')
f = ctl.makefile("rb")
n = 0
for line in f:
    job = json.loads(line)
    n += 1
    if "slow" in job["code"]:
        while not hit:
            time.sleep(0.01)
        time.sleep(0.4)  # the grace is 1 s
        ctl.sendall(json.dumps({"t": "done", "id": job["id"], "count": n, "sync": 1}).encode() + b"\n")
        time.sleep(3)  # the marker would come after the grace
        os.write(1, b"\0boxlite-sync %d\0" % job["id"])
    else:
        ctl.sendall(json.dumps({"t": "done", "id": job["id"], "count": n, "sync": 0}).encode() + b"\n")
`), 0o644)
	wrapper := filepath.Join(dir, "python3")
	os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec %s %s\n", hostPython, fake)), 0o755)
	m := New(Config{Python: wrapper, Cwd: dir, InterruptGrace: time.Second})
	t.Cleanup(m.Close)
	req := func(code string, timeout time.Duration) *wire.SessionResult {
		res, err := m.Run(context.Background(), &wire.SessionRequest{Name: "default", Language: wire.LangPython, TimeoutMs: timeout.Milliseconds()}, code, &sink{})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	req("first", 0)
	res := req("slow", 300*time.Millisecond)
	if res.Ended != ReasonInterruptFailed {
		t.Fatalf("the killed call: %+v %+v", res, res.Error)
	}
	if res := req("next", 0); !res.Restarted {
		t.Fatalf("the next call: %+v", res)
	}
}

// Calls that never start an interpreter (a bad cwd) under ever new
// session names take no room from sessions with state and leave the
// agent's bookkeeping bounded.
func TestFailedStartsTakeNoRoom(t *testing.T) {
	needPython(t)
	m := newManager(t, Config{MaxSessions: 2})
	run(t, m, call{name: "keep", code: "v = 7"})
	for i := 0; i < 1000; i++ {
		_, err := m.Run(context.Background(), &wire.SessionRequest{Name: fmt.Sprintf("s%d", i), Language: wire.LangPython, Cwd: "/nonexistent"}, "1", &sink{})
		if err == nil {
			t.Fatal("a call in a missing directory ran")
		}
	}
	if res, s := run(t, m, call{name: "keep", code: "v"}); res.Restarted || s.result() != "7" {
		t.Fatalf("the session with state: %+v %q", res, s.result())
	}
	m.mu.Lock()
	n, e := len(m.sessions), len(m.evicted)
	m.mu.Unlock()
	if n > 2 || e > maxEvicted {
		t.Fatalf("%d sessions and %d eviction reasons kept", n, e)
	}
}

// gatedSink holds stdout writes until its gate opens, saying when one
// waits.
type gatedSink struct {
	sink
	waiting chan struct{}
	gate    chan struct{}
}

func (s *gatedSink) Stdout(p []byte) error {
	close(s.waiting)
	<-s.gate
	return s.sink.Stdout(p)
}

// A job's end waits for its marker only once what the driver's stdout
// carried before the marker has been passed on: output of a child process
// written just before the code ended arrives before the result. (The
// marker used to count as seen as soon as it was parsed, with its bytes
// still on the way.)
func TestSyncMarkerWaitsForTheBytesBeforeIt(t *testing.T) {
	s := &gatedSink{waiting: make(chan struct{}), gate: make(chan struct{})}
	d := &driverInterp{proc: &process{done: make(chan struct{})}, synced: make(chan struct{}, 1)}
	d.job = &driverJob{id: 1, out: newOutput(s, 1<<20)}
	go d.forward(false, []byte("last words"+syncPrefix+"1\x00"))
	<-s.waiting // the bytes are on their way, the marker parsed
	ended := make(chan struct{})
	go func() {
		d.awaitSync(1, 1)
		close(ended)
	}()
	select {
	case <-ended:
		t.Fatal("the job ended before the bytes before its marker were passed on")
	case <-time.After(300 * time.Millisecond):
	}
	close(s.gate)
	<-ended
	if got := s.stdout.String(); got != "last words" {
		t.Fatalf("stdout %q", got)
	}
}

// stuckInterp is an interpreter no kill ends (a thread stuck in the
// kernel): its job ends after the interrupt's grace, its process never.
type stuckInterp struct{ never chan struct{} }

func (f *stuckInterp) run(j *job) *pending {
	p := &pending{done: make(chan struct{})}
	time.AfterFunc(500*time.Millisecond, func() { p.outcome.count = 1; close(p.done) })
	return p
}
func (f *stuckInterp) interrupt()              {}
func (f *stuckInterp) kill(string)             {}
func (f *stuckInterp) exited() <-chan struct{} { return f.never }
func (f *stuckInterp) death() death            { <-f.never; return death{} }

// A call whose interpreter survives the kill at the grace's end is
// answered, the interpreter abandoned and the session freed for a new one:
// waiting for its death held the call, and the session's turn, forever.
func TestUnkillableInterpreterIsAbandoned(t *testing.T) {
	m := New(Config{InterruptGrace: 100 * time.Millisecond, Cwd: t.TempDir()})
	k := key{wire.LangPython, "default"}
	m.sessions[k] = &session{key: k, turn: make(chan struct{}, 1), it: &stuckInterp{never: make(chan struct{})}}
	done := make(chan *wire.SessionResult, 1)
	go func() {
		res, err := m.Run(context.Background(), &wire.SessionRequest{Name: "default", Language: wire.LangPython, TimeoutMs: 100}, "1", &sink{})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		if res == nil || !strings.Contains(res.Ended, "abandoned") {
			t.Fatalf("%+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call hangs on an interpreter that does not die")
	}
	m.mu.Lock()
	s := m.sessions[k]
	m.mu.Unlock()
	if s != nil && s.it != nil {
		t.Fatal("the session still holds the abandoned interpreter")
	}
}
