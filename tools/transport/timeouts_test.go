package transport

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/server"
)

// Short timeouts for these tests; the slow client would need far longer
// (50 bytes at one per 100 ms) to finish.
var shortTimeouts = HTTPConfig{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond, IdleTimeout: time.Second}

// TestSlowloris dribbles a request to a real server over loopback TCP, one
// byte per 100 ms, and checks that the server ends the connection before
// the client is done, for headers and for the body.
func TestSlowloris(t *testing.T) {
	base, _ := startServer(t, shortTimeouts)
	addr := strings.TrimPrefix(base, "http://")
	const n = 50
	for _, tc := range []struct {
		name, prefix, drip string
	}{
		{"headers", "POST /mcp HTTP/1.1\r\nHost: " + addr + "\r\n", strings.Repeat("x", n)},
		{"body", fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			addr, aliceToken, len(initBody)), initBody[:n]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ended := make(chan string, 1)
			go func() {
				var got []byte
				buf := make([]byte, 512)
				for {
					k, err := c.Read(buf)
					got = append(got, buf[:k]...)
					if err != nil {
						ended <- string(got)
						return
					}
				}
			}()
			if _, err := c.Write([]byte(tc.prefix)); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(tc.drip); i++ {
				select {
				case got := <-ended:
					t.Logf("cut off after %d of %d bytes: %q", i, len(tc.drip), firstLine(got))
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := c.Write([]byte{tc.drip[i]}); err != nil {
					t.Logf("cut off after %d of %d bytes: %v", i, len(tc.drip), err)
					return
				}
			}
			t.Fatalf("the server waited for all %d dribbled bytes", len(tc.drip))
		})
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// TestStreamsOutliveReadTimeout: the read timeout bounds requests, not
// responses. A GET /sse stream, a GET /mcp stream and a tool call that run
// past it still deliver.
func TestStreamsOutliveReadTimeout(t *testing.T) {
	base, _ := startServer(t, shortTimeouts)
	wait := 3 * shortTimeouts.ReadTimeout

	endpoint, _, lines := sseEvents(t, base, aliceToken)
	id := initialize(t, base, aliceToken)
	get := do(t, "GET", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: id}, "")
	if get.stream == nil {
		t.Fatalf("GET /mcp: %d %q", get.status, get.body)
	}
	getEnded := make(chan struct{})
	go func() {
		buf := make([]byte, 256)
		for {
			if _, err := get.stream.Body.Read(buf); err != nil {
				close(getEnded)
				return
			}
		}
	}()

	// A call lasting longer than the read timeout gets its result.
	slow := fmt.Sprintf(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{"ms":%d}}}`, wait.Milliseconds())
	if r := do(t, "POST", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: id}, slow); r.status != http.StatusOK || !strings.Contains(r.body, "slept") {
		t.Fatalf("slow call over streamable HTTP: %d %q", r.status, r.body)
	}
	// The SSE stream opened before still carries answers.
	if r := do(t, "POST", endpoint, aliceToken, nil, initBody); r.status != http.StatusAccepted {
		t.Fatalf("POST /message: %d %q", r.status, r.body)
	}
	waitData(t, lines, `"protocolVersion"`)
	select {
	case <-getEnded:
		t.Fatal("the GET /mcp stream was cut")
	default:
	}
}
