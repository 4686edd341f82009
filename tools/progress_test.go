package tools

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// progressLog collects a call's progress notifications and lets the box's
// work wait until one carrying a given text was sent, so the test orders
// output and notifications without sleeping.
type progressLog struct {
	mu      sync.Mutex
	got     []map[string]any
	changed chan struct{}
}

// read keeps what ch brings until done is closed, then what is left in it.
func (l *progressLog) read(ch <-chan mcp.JSONRPCNotification, done <-chan struct{}) {
	for {
		select {
		case n := <-ch:
			l.add(n)
		case <-done:
			for len(ch) > 0 {
				l.add(<-ch)
			}
			return
		}
	}
}

func (l *progressLog) add(n mcp.JSONRPCNotification) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := map[string]any{"method": n.Method}
	for k, v := range n.Params.AdditionalFields {
		p[k] = v
	}
	l.got = append(l.got, p)
	close(l.changed)
	l.changed = make(chan struct{})
}

// await returns once a notification's message contains text.
func (l *progressLog) await(ctx context.Context, text string) error {
	guard := time.NewTimer(time.Minute) // a failure guard, not a timing assertion
	defer guard.Stop()
	for {
		l.mu.Lock()
		for _, p := range l.got {
			if m, _ := p["message"].(string); strings.Contains(m, text) {
				l.mu.Unlock()
				return nil
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-guard.C:
			return fmt.Errorf("no progress notification with %q", text)
		}
	}
}

// TestLongRunProgress: a long run_code or exec_command with a progress
// token sends progress notifications (through the real MCP server, to an
// initialized session) carrying the token, a growing progress value and
// the elapsed time with the latest output line (stderr's before
// stdout's); without a token it sends none. The manager is a fake at the
// Manager interface this package owns: its run waits for each expected
// notification before it prints more, so the test needs no sleeps.
func TestLongRunProgress(t *testing.T) {
	for _, c := range []struct {
		name, tool string
		args       map[string]any
	}{
		{"exec_command", "exec_command", map[string]any{"box": "b", "command": "make"}},
		{"run_code session", "run_code", map[string]any{"box": "b", "code": "train()"}},
		{"run_code fresh", "run_code", map[string]any{"box": "b", "code": "make", "language": "bash"}},
	} {
		for _, token := range []any{"tok-1", nil} {
			t.Run(fmt.Sprintf("%s token=%v", c.name, token), func(t *testing.T) {
				log := &progressLog{changed: make(chan struct{})}
				work := func(ctx context.Context, stdout, stderr io.Writer) error {
					if token == nil {
						io.WriteString(stdout, "step 1\n")
						return nil
					}
					io.WriteString(stdout, "step 1\nstep 2 half a li")
					if err := log.await(ctx, "step 2 half a li"); err != nil {
						return err
					}
					io.WriteString(stderr, "warning: slow\n")
					return log.await(ctx, "warning: slow")
				}
				f := &fakeManager{
					exec: func(ctx context.Context, req sandbox.ExecRequest, eio sandbox.ExecIO) (*sandbox.ExecResult, error) {
						return &sandbox.ExecResult{DurationMs: 1}, work(ctx, eio.Stdout, eio.Stderr)
					},
					session: func(ctx context.Context, req sandbox.SessionRequest, sio sandbox.SessionIO) (*sandbox.SessionResult, error) {
						return &sandbox.SessionResult{ExecutionCount: 1}, work(ctx, sio.Stdout, sio.Stderr)
					},
				}
				srv := fakeServer(t, f, Config{ProgressEvery: 10 * time.Millisecond})
				sess := &captureSession{ch: make(chan mcp.JSONRPCNotification, 10_000)}
				done := make(chan struct{})
				readerDone := make(chan struct{})
				go func() { log.read(sess.ch, done); close(readerDone) }()
				var meta map[string]any
				if token != nil {
					meta = map[string]any{"progressToken": token}
				}
				r := callWith(t, srv.WithContext(context.Background(), sess), srv, c.tool, c.args, meta)
				// The call has returned: whatever it sent is in the channel.
				close(done)
				<-readerDone
				if r.IsError {
					t.Fatalf("isError: %s", textOf(r))
				}
				if token == nil {
					if len(log.got) != 0 {
						t.Fatalf("notifications without a progress token: %v", log.got)
					}
					return
				}
				last, saw := -1.0, ""
				for _, p := range log.got {
					prog, _ := p["progress"].(float64)
					msg, _ := p["message"].(string)
					if p["method"] != "notifications/progress" || p["progressToken"] != token || prog <= last || !strings.HasPrefix(msg, "running ") {
						t.Errorf("notification %v (after progress %v)", p, last)
					}
					last = prog
					switch {
					case strings.HasSuffix(msg, ": step 2 half a li") && saw == "":
						saw = "stdout"
					case strings.HasSuffix(msg, ": warning: slow") && saw == "stdout":
						saw = "stderr"
					}
				}
				if saw != "stderr" {
					t.Errorf("messages did not follow the output (stdout's partial line, then stderr's line): %v", log.got)
				}
			})
		}
	}
}
