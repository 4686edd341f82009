package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

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
