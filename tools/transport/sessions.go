package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Every MCP session over HTTP, streamable (/mcp) or SSE (/sse + /message),
// is bound to the owner whose token opened it, in one sessionTable. A
// request naming a session that is unknown or another owner's gets the same
// 404 "Invalid session ID" on every method, so the answer never tells the
// two apart. The table also enforces the caps (per owner and in total, both
// transports together) and forgets a session when it ends: on DELETE, on
// mcp-go's idle expiry and at shutdown for streamable HTTP (mcp-go calls the
// SessionIdManager's Terminate in each case), when the stream closes for SSE.

// errNoSession is what a session lookup answers for an unknown session and
// for another owner's alike.
var errNoSession = errors.New("invalid session ID")

type sessionKind uint8

const (
	kindStreamable sessionKind = iota + 1
	kindSSE
)

type sessionEntry struct {
	owner string
	kind  sessionKind
}

// sessionTable binds session ids to owners and counts open sessions. It is
// safe for concurrent use.
type sessionTable struct {
	// Immutable after newSessionTable.
	max, ownerMax int
	idleTTL       time.Duration // only quoted in the over-limit message

	mu      sync.Mutex
	entries map[string]sessionEntry // guarded by mu: session id → owner
	open    map[string]int          // guarded by mu: owner → sessions bound or reserved
	total   int                     // guarded by mu: sum of open
}

func newSessionTable(max, ownerMax int, idleTTL time.Duration) *sessionTable {
	return &sessionTable{max: max, ownerMax: ownerMax, idleTTL: idleTTL,
		entries: map[string]sessionEntry{}, open: map[string]int{}}
}

// slot is a place under the caps, reserved by a request that may open a
// session (an initialize POST, a GET /sse). release (never bound) or
// forget/end (bound) gives it back; its fields are guarded by the table's mu.
type slot struct {
	owner    string
	kind     sessionKind
	id       string // set by bind
	released bool
}

type slotCtxKey struct{}

// limitError says which cap was hit and how to free a slot.
type limitError struct {
	holder, flag string // "owner \"alice\" has", "--owner-max-sessions"
	open, limit  int
	idleTTL      time.Duration
}

func (e *limitError) Error() string {
	return fmt.Sprintf("too many open MCP sessions: %s %d (limit %d, %s); close sessions you no longer use "+
		"(DELETE /mcp with their Mcp-Session-Id header, or close their SSE stream) or wait for idle ones to expire after %s",
		e.holder, e.open, e.limit, e.flag, e.idleTTL)
}

// reserve takes a slot for owner, or returns a *limitError.
func (t *sessionTable) reserve(owner string, kind sessionKind) (*slot, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total >= t.max {
		return nil, &limitError{holder: "the server has", flag: "--max-sessions", open: t.total, limit: t.max, idleTTL: t.idleTTL}
	}
	if n := t.open[owner]; n >= t.ownerMax {
		return nil, &limitError{holder: fmt.Sprintf("owner %q has", owner), flag: "--owner-max-sessions",
			open: n, limit: t.ownerMax, idleTTL: t.idleTTL}
	}
	t.total++
	t.open[owner]++
	return &slot{owner: owner, kind: kind}, nil
}

// bind turns s into the session id; false if s was already used.
func (t *sessionTable) bind(s *slot, id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.released || s.id != "" {
		return false
	}
	if _, dup := t.entries[id]; dup {
		return false
	}
	s.id = id
	t.entries[id] = sessionEntry{owner: s.owner, kind: s.kind}
	return true
}

// release gives back a slot that was never bound; a bound slot stays
// counted until its session is forgotten.
func (t *sessionTable) release(s *slot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.id != "" || s.released {
		return
	}
	s.released = true
	t.dropLocked(s.owner)
}

// end releases s if it was never bound, else forgets its session.
func (t *sessionTable) end(s *slot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	if s.id != "" {
		if _, ok := t.entries[s.id]; !ok {
			return // already forgotten
		}
		delete(t.entries, s.id)
	}
	t.dropLocked(s.owner)
}

// dropLocked uncounts one session of owner. t.mu must be held.
func (t *sessionTable) dropLocked(owner string) {
	t.total--
	if t.open[owner]--; t.open[owner] <= 0 {
		delete(t.open, owner)
	}
}

// forget ends session id (a no-op for an unknown id).
func (t *sessionTable) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[id]; ok {
		delete(t.entries, id)
		t.dropLocked(e.owner)
	}
}

// lookup returns errNoSession unless id is an open session of this kind
// that belongs to owner.
func (t *sessionTable) lookup(owner, id string, kind sessionKind) error {
	t.mu.Lock()
	e, ok := t.entries[id]
	t.mu.Unlock()
	if !ok || e.owner != owner || e.kind != kind {
		return errNoSession
	}
	return nil
}

// counts reports the sessions open (and reserved) in total and per owner.
func (t *sessionTable) counts() (int, map[string]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	per := make(map[string]int, len(t.open))
	for o, n := range t.open {
		per[o] = n
	}
	return t.total, per
}

// newSessionID returns 128 random bits in hex.
func newSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// notFound is the one answer for an unknown session and another owner's
// (byte for byte what mcp-go answers for an unknown streamable session).
func notFound(w http.ResponseWriter) {
	http.Error(w, "Invalid session ID", http.StatusNotFound)
}

// streamableGate guards /mcp. An initialize POST reserves a slot (429 with a
// JSON-RPC error over the caps) that the SessionIdManager binds; any request
// naming a session must name one of its owner's (404 otherwise); GET and
// DELETE must name one (400), since mcp-go would mint an unbound session for
// a GET without one.
func (t *sessionTable) streamableGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner := ownerOf(r)
		id := r.Header.Get(server.HeaderKeySessionID)
		modern := mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion))
		if r.Method == http.MethodPost {
			if reqID, ok := initializeRequest(r); ok {
				// mcp-go ignores the session header of an initialize.
				s, err := t.reserve(owner, kindStreamable)
				if err != nil {
					writeLimit(w, reqID, err)
					return
				}
				defer t.release(s)
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slotCtxKey{}, s)))
				return
			}
		}
		switch {
		case id != "":
			if t.lookup(owner, id, kindStreamable) != nil {
				notFound(w)
				return
			}
		case !modern && (r.Method == http.MethodGet || r.Method == http.MethodDelete):
			http.Error(w, "Mcp-Session-Id header required (send initialize first)", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// initializeRequest reports whether the (already read) body is an
// initialize request, as mcp-go decides it, and returns its id.
func initializeRequest(r *http.Request) (any, bool) {
	if r.GetBody == nil {
		return nil, false
	}
	b, err := r.GetBody()
	if err != nil {
		return nil, false
	}
	var buf bytes.Buffer
	buf.ReadFrom(b)
	if !bytes.Contains(buf.Bytes(), []byte(`"initialize"`)) {
		return nil, false
	}
	var msg struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	if json.Unmarshal(buf.Bytes(), &msg) != nil || msg.Method != string(mcp.MethodInitialize) {
		return nil, false
	}
	return msg.ID, true
}

// writeLimit answers an initialize over the caps: HTTP 429 with a JSON-RPC
// error saying which limit and how to free a slot.
func writeLimit(w http.ResponseWriter, id any, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": id,
		"error": map[string]any{"code": -32000, "message": err.Error()}})
}

// streamableIDs is the SessionIdManagerResolver given to mcp-go: ids are
// random and bound, when made, to the slot the initialize request reserved.
type streamableIDs struct{ t *sessionTable }

func (s streamableIDs) ResolveSessionIdManager(r *http.Request) server.SessionIdManager {
	m := streamableIDManager{t: s.t}
	if r != nil { // nil from mcp-go's idle sweeper and shutdown
		m.slot, _ = r.Context().Value(slotCtxKey{}).(*slot)
		m.owner, m.hasOwner = ownerOf(r), true
	}
	return m
}

type streamableIDManager struct {
	t        *sessionTable
	slot     *slot
	owner    string
	hasOwner bool
}

// Generate makes the id of a new session. Without a slot (no initialize
// through streamableGate) the id is bound to no one: every use of it is 404.
func (m streamableIDManager) Generate() string {
	id := newSessionID()
	if m.slot == nil || !m.t.bind(m.slot, id) {
		return "unbound-" + id
	}
	return id
}

// Validate accepts only open sessions of the requesting owner.
func (m streamableIDManager) Validate(id string) (bool, error) {
	if !m.hasOwner {
		return false, errNoSession
	}
	return false, m.t.lookup(m.owner, id, kindStreamable)
}

// Terminate forgets the session: DELETE (its owner checked by
// streamableGate), idle expiry and shutdown.
func (m streamableIDManager) Terminate(id string) (bool, error) {
	m.t.forget(id)
	return false, nil
}

// sseStream guards GET /sse: it reserves a slot (429 over the caps) that
// sseSessionID binds, and forgets the session when the stream ends.
func (t *sessionTable) sseStream(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			next.ServeHTTP(w, r) // mcp-go answers 405
			return
		}
		s, err := t.reserve(ownerOf(r), kindSSE)
		if err != nil {
			http.Error(w, err.Error(), http.StatusTooManyRequests)
			return
		}
		defer t.end(s)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slotCtxKey{}, s)))
	})
}

// sseSessionID is mcp-go's SSE session id generator.
func (t *sessionTable) sseSessionID(ctx context.Context, r *http.Request) (string, error) {
	s, _ := ctx.Value(slotCtxKey{}).(*slot)
	id := newSessionID()
	if s == nil || !t.bind(s, id) {
		return "", errors.New("SSE stream opened without a session slot")
	}
	return id, nil
}

// sseMessage lets only the owner of an SSE session post to it.
func (t *sessionTable) sseMessage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.URL.Query().Get("sessionId"); id != "" && t.lookup(ownerOf(r), id, kindSSE) != nil {
			notFound(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}
