package guestagent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

const testMaxFile = 1 << 20

// agent starts an agent on a real unix socket and returns a connected client.
func agent(t testing.TB) (*client.Client, string) {
	return agentWith(t, guestagent.Config{MaxFileSize: testMaxFile, OutputLimit: 4 << 20})
}

func agentWith(t testing.TB, cfg guestagent.Config) (*client.Client, string) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.PowerOff = func(bool) {}
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := guestagent.NewServer(cfg)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, l) }()
	c := dial(t, sock)
	t.Cleanup(func() { cancel(); <-done })
	return c, dir
}

func dial(t testing.TB, sock string) *client.Client {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(context.Background(), conn, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func sh(script string) wire.ExecRequest {
	return wire.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}
}

// events records stdout/stderr writes in arrival order.
type events struct {
	mu  sync.Mutex
	seq []string
}

func (e *events) w(tag string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
			e.seq = append(e.seq, tag+":"+line)
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestHelloAndInfo(t *testing.T) {
	c, _ := agent(t)
	if h := c.Hello(); h.Protocol != wire.ProtocolVersion || h.AgentVersion != guestagent.Version {
		t.Fatalf("hello = %+v", h)
	}
	in, err := c.Info(context.Background())
	if err != nil || in.Kernel == "" || in.MemTotalKiB == 0 || in.PID != os.Getpid() {
		t.Fatalf("info = %+v, %v", in, err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHelloRefusesWrongProtocol(t *testing.T) {
	_, dir := agent(t)
	conn, err := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wire.WriteJSON(conn, wire.FrameHello, wire.Hello{Magic: wire.Magic, Protocol: 99})
	var reply wire.HelloReply
	if err := wire.ReadJSON(wire.NewReader(conn), wire.FrameHelloReply, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.Error == "" {
		t.Fatal("agent accepted protocol 99")
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after refusal")
	}
}

func TestExecStreamingOrderAndExit(t *testing.T) {
	c, _ := agent(t)
	var ev events
	res, err := c.Exec(context.Background(), sh("echo o1; sleep 0.05; echo e1 >&2; sleep 0.05; echo o2; exit 3"),
		client.ExecIO{Stdout: ev.w("out"), Stderr: ev.w("err")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"out:o1", "err:e1", "out:o2"}
	if fmt.Sprint(ev.seq) != fmt.Sprint(want) || res.ExitCode != 3 || res.StdoutBytes != 6 || res.StderrBytes != 3 {
		t.Fatalf("seq=%v res=%+v", ev.seq, res)
	}
}

func TestExecSignalAndStdin(t *testing.T) {
	c, _ := agent(t)
	ctx := context.Background()
	res, err := c.Exec(ctx, sh("kill -TERM $$"), client.ExecIO{})
	if err != nil || res.Signal != "SIGTERM" || res.ExitCode != -1 {
		t.Fatalf("signal: %+v, %v", res, err)
	}
	var out bytes.Buffer
	req := wire.ExecRequest{Argv: []string{"cat"}, Stdin: []byte("inline\x00bytes")}
	if res, err := c.Exec(ctx, req, client.ExecIO{Stdout: &out}); err != nil || res.ExitCode != 0 || out.String() != "inline\x00bytes" {
		t.Fatalf("inline stdin: %q %+v %v", out.String(), res, err)
	}
	out.Reset()
	big := bytes.Repeat([]byte("0123456789"), 100_000)
	if _, err := c.Exec(ctx, wire.ExecRequest{Argv: []string{"wc", "-c"}}, client.ExecIO{Stdin: bytes.NewReader(big), Stdout: &out}); err != nil || strings.TrimSpace(out.String()) != "1000000" {
		t.Fatalf("streamed stdin: %q %v", out.String(), err)
	}
	// Env and cwd.
	out.Reset()
	dir := t.TempDir()
	req = wire.ExecRequest{Argv: []string{"sh", "-c", "echo $FOO; pwd"}, Env: []string{"FOO=bar"}, Cwd: dir}
	if _, err := c.Exec(ctx, req, client.ExecIO{Stdout: &out}); err != nil || out.String() != "bar\n"+dir+"\n" {
		t.Fatalf("env/cwd: %q %v", out.String(), err)
	}
}

func TestExecStartFailures(t *testing.T) {
	c, dir := agent(t)
	noexec := filepath.Join(dir, "noexec.sh")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	tests := []struct {
		req  wire.ExecRequest
		code wire.Code
	}{
		{wire.ExecRequest{Argv: []string{"definitely-not-a-program"}}, wire.CodeNotFound},
		{wire.ExecRequest{Argv: []string{"/no/such/bin"}}, wire.CodeNotFound},
		{wire.ExecRequest{Argv: []string{"true"}, Cwd: "/no/such/dir"}, wire.CodeNotFound},
		{wire.ExecRequest{Argv: []string{"true"}, Cwd: noexec}, wire.CodeNotDir},
		{wire.ExecRequest{Argv: []string{noexec}}, wire.CodePermission},
		{wire.ExecRequest{Argv: []string{"/tmp"}}, wire.CodeIsDir},
		{wire.ExecRequest{}, wire.CodeInvalid},
	}
	for _, tt := range tests {
		_, err := c.Exec(context.Background(), tt.req, client.ExecIO{})
		var werr *wire.Error
		if !errors.As(err, &werr) || werr.Code != tt.code || werr.Message == "" {
			t.Errorf("Exec(%v) = %v; want code %s", tt.req, err, tt.code)
		}
	}
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backgroundPID runs a shell that backgrounds a long sleep and prints its pid.
const backgroundSleep = "sleep 300 & echo $!; wait"

func firstLinePID(t *testing.T, out *syncBuffer) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if line, _, ok := strings.Cut(out.String(), "\n"); ok {
			pid, err := strconv.Atoi(line)
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no pid printed")
	return 0
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestExecTimeoutKillsGrandchildren(t *testing.T) {
	c, _ := agent(t)
	var out syncBuffer
	req := sh(backgroundSleep)
	req.TimeoutMs = 300
	res, err := c.Exec(context.Background(), req, client.ExecIO{Stdout: &out})
	if err != nil || !res.TimedOut || res.Signal != "SIGKILL" {
		t.Fatalf("res=%+v err=%v", res, err)
	}
	waitGone(t, firstLinePID(t, &out))
}

func TestExecCancelKillsGroup(t *testing.T) {
	c, _ := agent(t)
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	type ret struct {
		res *wire.ExecResult
		err error
	}
	done := make(chan ret, 1)
	go func() {
		res, err := c.Exec(ctx, sh(backgroundSleep), client.ExecIO{Stdout: &out})
		done <- ret{res, err}
	}()
	pid := firstLinePID(t, &out)
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) || r.res == nil || !r.res.Cancelled {
		t.Fatalf("res=%+v err=%v", r.res, r.err)
	}
	waitGone(t, pid)
}

func TestHostDisconnectKillsGroup(t *testing.T) {
	_, dir := agent(t)
	c := dial(t, filepath.Join(dir, "agent.sock"))
	var out syncBuffer
	go c.Exec(context.Background(), sh(backgroundSleep), client.ExecIO{Stdout: &out})
	pid := firstLinePID(t, &out)
	c.Close()
	waitGone(t, pid)
}

func TestOutputFloodIsCapped(t *testing.T) {
	c, _ := agent(t)
	var n int64
	counter := writerFunc(func(p []byte) (int, error) { n += int64(len(p)); return len(p), nil })
	req := sh("head -c 64000000 /dev/zero")
	req.OutputLimit = 1 << 20
	res, err := c.Exec(context.Background(), req, client.ExecIO{Stdout: counter})
	if err != nil || !res.Truncated || n != 1<<20 || res.StdoutBytes != 64000000 || res.ExitCode != 0 {
		t.Fatalf("res=%+v err=%v received=%d", res, err, n)
	}
	// An endless flood ends at its timeout, still capped.
	n = 0
	req = wire.ExecRequest{Argv: []string{"yes"}, TimeoutMs: 500, OutputLimit: 1 << 20}
	res, err = c.Exec(context.Background(), req, client.ExecIO{Stdout: counter})
	if err != nil || !res.TimedOut || !res.Truncated || n != 1<<20 {
		t.Fatalf("yes: res=%+v err=%v received=%d", res, err, n)
	}
}

func TestBackgroundChildDoesNotHangExec(t *testing.T) {
	c, _ := agent(t)
	start := time.Now()
	// The shell exits at once but its child keeps stdout open.
	res, err := c.Exec(context.Background(), sh("sleep 30 & echo started"), client.ExecIO{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("res=%+v err=%v", res, err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("exec waited for the background child (%v)", d)
	}
}

func TestConcurrentExecs(t *testing.T) {
	c, _ := agent(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			res, err := c.Exec(context.Background(), sh(fmt.Sprintf("sleep 0.2; echo %d", i)), client.ExecIO{Stdout: &out})
			if err != nil || res.ExitCode != 0 || out.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("exec %d: %q %+v %v", i, out.String(), res, err)
			}
		}()
	}
	// The control path stays responsive while 50 execs run.
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestFileRoundTrips(t *testing.T) {
	c, dir := agent(t)
	ctx := context.Background()
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	tests := []struct {
		name string
		data []byte
		size int64 // announced; -1 unknown
		code wire.Code
	}{
		{"all byte values", all, 256, ""},
		{"empty", nil, 0, ""},
		{"at limit", bytes.Repeat([]byte{7}, testMaxFile), testMaxFile, ""},
		{"over limit announced", bytes.Repeat([]byte{7}, testMaxFile+1), testMaxFile + 1, wire.CodeTooLarge},
		{"over limit streamed", bytes.Repeat([]byte{7}, testMaxFile+1), -1, wire.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "sub", "deeper", strings.ReplaceAll(tt.name, " ", "_"))
			res, err := c.WriteFile(ctx, wire.WriteFileReq{Path: path, Mode: 0o600, Size: tt.size}, bytes.NewReader(tt.data))
			if tt.code != "" {
				var werr *wire.Error
				if !errors.As(err, &werr) || werr.Code != tt.code {
					t.Fatalf("WriteFile = %v; want %s", err, tt.code)
				}
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Fatal("refused write left a file")
				}
				if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".boxlite-*")); len(m) > 0 {
					t.Fatalf("temp files left: %v", m)
				}
				return
			}
			if err != nil || res.Bytes != int64(len(tt.data)) {
				t.Fatalf("WriteFile = %+v, %v", res, err)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Fatalf("mode = %v", fi.Mode())
			}
			var got bytes.Buffer
			rres, err := c.ReadFile(ctx, wire.ReadFileReq{Path: path}, &got)
			if err != nil || !bytes.Equal(got.Bytes(), tt.data) || rres.Truncate {
				t.Fatalf("ReadFile = %d bytes %+v, %v", got.Len(), rres, err)
			}
		})
	}
}

func TestReadFileLimitsAndErrors(t *testing.T) {
	c, dir := agent(t)
	ctx := context.Background()
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("x"), testMaxFile+10), 0o644)
	var out bytes.Buffer
	res, err := c.ReadFile(ctx, wire.ReadFileReq{Path: big, MaxBytes: 100}, &out)
	if err != nil || out.Len() != 100 || !res.Truncate {
		t.Fatalf("prefix read: %d %+v %v", out.Len(), res, err)
	}
	// /proc files claim size 0 but have content.
	out.Reset()
	if res, err := c.ReadFile(ctx, wire.ReadFileReq{Path: "/proc/self/status"}, &out); err != nil || out.Len() == 0 || res.Truncate {
		t.Fatalf("/proc read: %d %+v %v", out.Len(), res, err)
	}
	for _, tt := range []struct {
		path string
		code wire.Code
	}{
		{big, wire.CodeTooLarge}, {dir, wire.CodeIsDir}, {filepath.Join(dir, "nope"), wire.CodeNotFound}, {"relative/path", wire.CodeInvalid},
		{filepath.Join(big, "child"), wire.CodeNotDir},
	} {
		_, err := c.ReadFile(ctx, wire.ReadFileReq{Path: tt.path}, io.Discard)
		var werr *wire.Error
		if !errors.As(err, &werr) || werr.Code != tt.code {
			t.Errorf("ReadFile(%s) = %v; want %s", tt.path, err, tt.code)
		}
	}
	if _, err := c.WriteFile(ctx, wire.WriteFileReq{Path: dir, Size: 1}, strings.NewReader("x")); err == nil {
		t.Error("writing over a directory succeeded")
	}
}

func TestStatAndListDir(t *testing.T) {
	c, dir := agent(t)
	ctx := context.Background()
	os.WriteFile(filepath.Join(dir, "f"), []byte("abc"), 0o640)
	os.Symlink("f", filepath.Join(dir, "l"))
	fi, err := c.Stat(ctx, filepath.Join(dir, "l"))
	if err != nil || fi.Link != "f" {
		t.Fatalf("stat link = %+v, %v", fi, err)
	}
	ents, trunc, err := c.ListDir(ctx, dir)
	if err != nil || trunc {
		t.Fatal(err)
	}
	names := map[string]wire.FileInfo{}
	for _, e := range ents {
		names[e.Name] = e
	}
	if names["f"].Size != 3 || !names["agent.sock"].ModTime.Before(time.Now().Add(time.Minute)) || names["l"].Link != "f" {
		t.Fatalf("entries = %+v", ents)
	}
	if _, _, err := c.ListDir(ctx, filepath.Join(dir, "f")); err == nil {
		t.Fatal("ListDir of a file succeeded")
	}
}

func TestShutdownCallsPowerOff(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, _ := net.Listen("unix", sock)
	off := make(chan bool, 1)
	srv := guestagent.NewServer(guestagent.Config{PowerOff: func(r bool) { off <- r }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, l)
	c := dial(t, sock)
	if err := c.Shutdown(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-off:
		if r {
			t.Fatal("reboot requested")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PowerOff not called")
	}
}

func TestCallOnDeadConnection(t *testing.T) {
	c, _ := agent(t)
	c.Close()
	if err := c.Ping(context.Background()); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("Ping after close = %v", err)
	}
}

func TestExecAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change uid")
	}
	c, _ := agent(t)
	uid, gid := uint32(65534), uint32(65534)
	var out bytes.Buffer
	res, err := c.Exec(context.Background(), wire.ExecRequest{Argv: []string{"sh", "-c", "id -u; id -g"}, UID: &uid, GID: &gid}, client.ExecIO{Stdout: &out})
	if err != nil || res.ExitCode != 0 || out.String() != "65534\n65534\n" {
		t.Fatalf("%q %+v %v", out.String(), res, err)
	}
}
