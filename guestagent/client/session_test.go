package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/yamux"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// oldAgent answers the hello as an agent from before sessions would.
func oldAgent(t *testing.T, conn net.Conn) {
	var h wire.Hello
	if err := wire.ReadJSON(wire.NewReader(conn), wire.FrameHello, &h); err != nil {
		t.Error(err)
		return
	}
	wire.WriteJSON(conn, wire.FrameHelloReply, wire.HelloReply{Protocol: wire.ProtocolVersion, AgentVersion: "0.0.9",
		Capabilities: []string{"exec", "file.read", "file.write", "info", "shutdown"}})
}

func TestRunSessionOldAgent(t *testing.T) {
	host, agent := net.Pipe()
	defer agent.Close()
	go oldAgent(t, agent)
	c, err := New(context.Background(), host, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.SupportsSessions() {
		t.Fatal("an agent without the session capability supports sessions")
	}
	_, err = c.RunSession(context.Background(), wire.SessionRequest{Name: "default", Language: wire.LangPython}, "1", SessionIO{})
	if !errors.Is(err, ErrNoSessions) || !strings.Contains(err.Error(), "rebuild the image") || !strings.Contains(err.Error(), "0.0.9") {
		t.Fatalf("err = %v", err)
	}
}

// TestRunSessionDefaultsForMinor1: an agent of protocol minor 1 ignores
// StartCwd and StartEnv, so the client sends the box's defaults as the
// call's Cwd (unless one is given) and Env (under the call's own); a
// newer agent gets them as they are.
func TestRunSessionDefaultsForMinor1(t *testing.T) {
	for _, tc := range []struct {
		name  string
		minor int
		cwd   string
		want  wire.SessionRequest
	}{
		{"minor 1", 1, "", wire.SessionRequest{Cwd: "/work", Env: []string{"A=box", "B=call"}}},
		{"minor 1 with cwd", 1, "/x", wire.SessionRequest{Cwd: "/x", Env: []string{"A=box", "B=call"}}},
		{"current", wire.ProtocolMinor, "", wire.SessionRequest{Env: []string{"B=call"}, StartCwd: "/work", StartEnv: []string{"A=box"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, agent := net.Pipe()
			defer agent.Close()
			got := make(chan wire.SessionRequest, 1)
			go sessionAgent(t, agent, tc.minor, got)
			c, err := New(context.Background(), host, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			req := wire.SessionRequest{Name: "default", Language: wire.LangPython, Cwd: tc.cwd, Env: []string{"B=call"}, StartCwd: "/work", StartEnv: []string{"A=box"}}
			if _, err := c.RunSession(context.Background(), req, "1", SessionIO{}); err != nil {
				t.Fatal(err)
			}
			r := <-got
			if r.Cwd != tc.want.Cwd || r.StartCwd != tc.want.StartCwd || strings.Join(r.Env, ",") != strings.Join(tc.want.Env, ",") || strings.Join(r.StartEnv, ",") != strings.Join(tc.want.StartEnv, ",") {
				t.Fatalf("the agent got %+v, want %+v", r, tc.want)
			}
		})
	}
}

// sessionAgent answers the hello with minor and a session capability,
// passes the first session request on, and answers it.
func sessionAgent(t *testing.T, conn net.Conn, minor int, got chan<- wire.SessionRequest) {
	var h wire.Hello
	if err := wire.ReadJSON(wire.NewReader(conn), wire.FrameHello, &h); err != nil {
		t.Error(err)
		return
	}
	wire.WriteJSON(conn, wire.FrameHelloReply, wire.HelloReply{Protocol: wire.ProtocolVersion, Minor: minor, AgentVersion: "test", Capabilities: []string{wire.CapSession}})
	sess, err := yamux.Server(conn, wire.YamuxConfig())
	if err != nil {
		t.Error(err)
		return
	}
	st, err := sess.Accept()
	if err != nil {
		t.Error(err)
		return
	}
	r := wire.NewReader(st)
	var req wire.Request
	if err := wire.ReadJSON(r, wire.FrameRequest, &req); err != nil || req.Session == nil {
		t.Errorf("request: %+v %v", req, err)
		return
	}
	got <- *req.Session
	for {
		f, err := r.ReadFrame()
		if err != nil || f.Type == wire.FrameEOF {
			break
		}
	}
	wire.WriteJSON(st, wire.FrameResult, wire.Result{Session: &wire.SessionResult{}})
}
