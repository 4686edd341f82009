package transport

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/server"
)

const listBoxes = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_boxes","arguments":{}}}`

// TestStreamableSessionOwner replays alice's Mcp-Session-Id with bob's token
// on every method: each gets the 404 an unknown session gets, byte for byte,
// and alice's session works on afterwards.
func TestStreamableSessionOwner(t *testing.T) {
	base, h := startServer(t, HTTPConfig{})
	alice := initialize(t, base, aliceToken)
	unknown := newSessionID()

	for _, tc := range []struct{ method, body string }{
		{"POST", listBoxes},
		{"GET", ""},
		{"DELETE", ""},
	} {
		t.Run(tc.method, func(t *testing.T) {
			replayed := do(t, tc.method, base+"/mcp", bobToken, map[string]string{server.HeaderKeySessionID: alice}, tc.body)
			if replayed.status != http.StatusNotFound {
				t.Fatalf("bob's %s on alice's session: %d %q, want 404", tc.method, replayed.status, replayed.body)
			}
			other := do(t, tc.method, base+"/mcp", bobToken, map[string]string{server.HeaderKeySessionID: unknown}, tc.body)
			if other.status != replayed.status || other.body != replayed.body || other.ctype != replayed.ctype {
				t.Fatalf("foreign and unknown sessions are told apart: %d %q %q vs %d %q %q",
					replayed.status, replayed.ctype, replayed.body, other.status, other.ctype, other.body)
			}
		})
	}

	// Alice's session is intact: her calls and her stream work.
	r := do(t, "POST", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: alice}, listBoxes)
	if r.status != http.StatusOK || !strings.Contains(r.body, `boxes`) {
		t.Fatalf("alice after the replays: %d %q", r.status, r.body)
	}
	if g := do(t, "GET", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: alice}, ""); g.stream == nil {
		t.Fatalf("alice's GET stream: %d %q", g.status, g.body)
	}

	// Her DELETE ends it and the binding is gone.
	if d := do(t, "DELETE", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: alice}, ""); d.status != http.StatusOK {
		t.Fatalf("alice's DELETE: %d %q", d.status, d.body)
	}
	if r := do(t, "POST", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: alice}, listBoxes); r.status != http.StatusNotFound {
		t.Fatalf("deleted session still answers: %d %q", r.status, r.body)
	}
	if n, _ := h.sessions.counts(); n != 0 {
		t.Fatalf("%d sessions still counted after DELETE", n)
	}
}

// TestStreamableRequiresSession: a GET or DELETE without a session would
// make mcp-go mint a session bound to no one (GET) or answer 200 (DELETE).
func TestStreamableRequiresSession(t *testing.T) {
	base, h := startServer(t, HTTPConfig{})
	for _, m := range []string{"GET", "DELETE"} {
		if r := do(t, m, base+"/mcp", aliceToken, nil, ""); r.status != http.StatusBadRequest {
			t.Errorf("%s without Mcp-Session-Id: %d %q, want 400", m, r.status, r.body)
		}
	}
	if n, _ := h.sessions.counts(); n != 0 {
		t.Fatalf("%d sessions counted", n)
	}
}

// TestSSESessionOwner: bob posting to alice's SSE session gets the 404 an
// unknown session gets; alice's session works on; closing her stream
// forgets the session.
func TestSSESessionOwner(t *testing.T) {
	base, h := startServer(t, HTTPConfig{})
	endpoint, stream, lines := sseEvents(t, base, aliceToken)
	unknown := base + "/message?sessionId=" + newSessionID()

	replayed := do(t, "POST", endpoint, bobToken, nil, initBody)
	if replayed.status != http.StatusNotFound {
		t.Fatalf("bob's POST to alice's SSE session: %d %q, want 404", replayed.status, replayed.body)
	}
	other := do(t, "POST", unknown, bobToken, nil, initBody)
	if other.status != replayed.status || other.body != replayed.body || other.ctype != replayed.ctype {
		t.Fatalf("foreign and unknown SSE sessions are told apart: %d %q vs %d %q", replayed.status, replayed.body, other.status, other.body)
	}

	if r := do(t, "POST", endpoint, aliceToken, nil, initBody); r.status != http.StatusAccepted {
		t.Fatalf("alice's initialize: %d %q", r.status, r.body)
	}
	waitData(t, lines, `"protocolVersion"`)
	if r := do(t, "POST", endpoint, aliceToken, nil, listBoxes); r.status != http.StatusAccepted {
		t.Fatalf("alice's call: %d %q", r.status, r.body)
	}
	waitData(t, lines, `boxes`)

	if n, per := h.sessions.counts(); n != 1 || per["alice"] != 1 {
		t.Fatalf("counted %d %v, want alice's one session", n, per)
	}
	stream.Body.Close()
	eventually(t, "the closed SSE session is forgotten", func() bool { n, _ := h.sessions.counts(); return n == 0 })
	if r := do(t, "POST", endpoint, aliceToken, nil, listBoxes); r.status != http.StatusNotFound {
		t.Fatalf("closed SSE session still answers: %d %q", r.status, r.body)
	}
}

// TestSessionCaps: the caps count streamable HTTP and SSE sessions together,
// per owner and in total; an initialize over a cap gets 429 naming the
// limit and how to free a slot; freeing one lets the next in.
func TestSessionCaps(t *testing.T) {
	base, h := startServer(t, HTTPConfig{MaxSessions: 3, OwnerMaxSessions: 2})
	a1 := initialize(t, base, aliceToken)
	_, aliceStream, _ := sseEvents(t, base, aliceToken)

	over := do(t, "POST", base+"/mcp", aliceToken, nil, initBody)
	if over.status != http.StatusTooManyRequests || !strings.Contains(over.body, "--owner-max-sessions") ||
		!strings.Contains(over.body, "DELETE") || !strings.Contains(over.body, `"jsonrpc"`) {
		t.Fatalf("alice's third session: %d %q", over.status, over.body)
	}
	if s := do(t, "GET", base+"/sse", aliceToken, nil, ""); s.status != http.StatusTooManyRequests || !strings.Contains(s.body, "--owner-max-sessions") {
		t.Fatalf("alice's third session over SSE: %d %q", s.status, s.body)
	}
	// A refused or failed initialize holds no slot.
	if r := do(t, "POST", base+"/mcp", bobToken, map[string]string{"Content-Type": "text/plain"}, initBody); r.status == http.StatusOK {
		t.Fatalf("initialize with a wrong content type: %d", r.status)
	}

	initialize(t, base, bobToken) // the third session in total
	if r := do(t, "POST", base+"/mcp", bobToken, nil, initBody); r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "--max-sessions") {
		t.Fatalf("fourth session in total: %d %q", r.status, r.body)
	}
	if n, per := h.sessions.counts(); n != 3 || per["alice"] != 2 || per["bob"] != 1 {
		t.Fatalf("counted %d %v", n, per)
	}

	// Freeing slots (a DELETE, a closed stream) lets the next ones in.
	if d := do(t, "DELETE", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: a1}, ""); d.status != http.StatusOK {
		t.Fatalf("DELETE: %d", d.status)
	}
	initialize(t, base, bobToken)
	aliceStream.Body.Close()
	eventually(t, "the closed stream frees its slot", func() bool { n, _ := h.sessions.counts(); return n == 2 })
	initialize(t, base, aliceToken)
}

// TestSessionIdleExpiry: a streamable session without requests expires
// (mcp-go's sweeper calls Terminate) and its binding and slot go with it.
func TestSessionIdleExpiry(t *testing.T) {
	base, h := startServer(t, HTTPConfig{SessionIdleTTL: time.Second})
	id := initialize(t, base, aliceToken)
	eventually(t, "the idle session expires", func() bool { n, _ := h.sessions.counts(); return n == 0 })
	if r := do(t, "POST", base+"/mcp", aliceToken, map[string]string{server.HeaderKeySessionID: id}, listBoxes); r.status != http.StatusNotFound {
		t.Fatalf("expired session still answers: %d %q", r.status, r.body)
	}
}

// TestSessionTable covers the bookkeeping the HTTP tests cannot reach.
func TestSessionTable(t *testing.T) {
	tb := newSessionTable(2, 2, time.Minute)
	s1, err := tb.reserve("a", kindStreamable)
	if err != nil {
		t.Fatal(err)
	}
	if !tb.bind(s1, "x") || tb.bind(s1, "y") {
		t.Fatal("a slot binds exactly once")
	}
	s2, _ := tb.reserve("a", kindSSE)
	if tb.bind(s2, "x") {
		t.Fatal("an id bound twice")
	}
	tb.release(s2)
	tb.release(s2) // twice: counted once
	tb.release(s1) // bound: stays
	for _, tc := range []struct {
		owner, id string
		kind      sessionKind
		ok        bool
	}{
		{"a", "x", kindStreamable, true},
		{"b", "x", kindStreamable, false},
		{"a", "x", kindSSE, false},
		{"a", "nope", kindStreamable, false},
	} {
		if err := tb.lookup(tc.owner, tc.id, tc.kind); (err == nil) != tc.ok {
			t.Errorf("lookup(%q, %q, %d) = %v", tc.owner, tc.id, tc.kind, err)
		}
	}
	if n, _ := tb.counts(); n != 1 {
		t.Fatalf("counted %d, want 1", n)
	}
	tb.forget("x")
	tb.forget("x")
	tb.end(s1) // already forgotten: no double count
	if n, per := tb.counts(); n != 0 || len(per) != 0 {
		t.Fatalf("counted %d %v after forget", n, per)
	}
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name               string
		in                 HTTPConfig
		max, ownerMax      int
		idle, read, header time.Duration
		err                bool
	}{
		{"defaults with tokens", HTTPConfig{Listen: "0.0.0.0:1", Tokens: testTokens}, DefaultMaxSessions, DefaultOwnerMaxSessions,
			DefaultSessionIdleTTL, DefaultReadTimeout, DefaultReadHeaderTimeout, false},
		{"one local owner: only the total cap", HTTPConfig{Listen: "127.0.0.1:1", MaxSessions: 9, OwnerMaxSessions: 2}, 9, 9,
			DefaultSessionIdleTTL, DefaultReadTimeout, DefaultReadHeaderTimeout, false},
		{"explicit values", HTTPConfig{Listen: "127.0.0.1:1", Tokens: testTokens, MaxSessions: 9, OwnerMaxSessions: 2,
			SessionIdleTTL: time.Second, ReadTimeout: 2 * time.Second, ReadHeaderTimeout: 3 * time.Second}, 9, 2,
			time.Second, 2 * time.Second, 3 * time.Second, false},
		{"negative cap", HTTPConfig{Listen: "127.0.0.1:1", MaxSessions: -1}, 0, 0, 0, 0, 0, true},
		{"negative timeout", HTTPConfig{Listen: "127.0.0.1:1", ReadTimeout: -1}, 0, 0, 0, 0, 0, true},
		{"beyond loopback without tokens", HTTPConfig{Listen: "0.0.0.0:1"}, 0, 0, 0, 0, 0, true},
	} {
		c, err := tc.in.withDefaults()
		if (err != nil) != tc.err {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if !tc.err && (c.MaxSessions != tc.max || c.OwnerMaxSessions != tc.ownerMax || c.SessionIdleTTL != tc.idle ||
			c.ReadTimeout != tc.read || c.ReadHeaderTimeout != tc.header || c.IdleTimeout == 0) {
			t.Errorf("%s: got %+v", tc.name, c)
		}
	}
}
