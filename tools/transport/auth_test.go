package transport

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAuthWrap(t *testing.T) {
	a := newAuth(testTokens, nil, slog.New(slog.DiscardHandler))
	var got string
	h := a.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = ownerOf(r) }))
	for _, tc := range []struct {
		name, header string
		owner        string // "" means 401
	}{
		{"canonical", "Bearer " + aliceToken, "alice"},
		{"other owner", "Bearer " + bobToken, "bob"},
		{"lower-case scheme (RFC 9110 11.1: case-insensitive)", "bearer " + aliceToken, "alice"},
		{"upper-case scheme", "BEARER " + aliceToken, "alice"},
		{"mixed-case scheme", "bEaReR " + bobToken, "bob"},
		{"several spaces (1*SP)", "Bearer   " + aliceToken, "alice"},
		{"no header", "", ""},
		{"scheme only", "Bearer", ""},
		{"scheme and space only", "Bearer ", ""},
		{"no space", "Bearer" + aliceToken, ""},
		{"tab instead of space", "Bearer\t" + aliceToken, ""},
		{"other scheme", "Basic " + aliceToken, ""},
		{"token with a trailing word", "Bearer " + aliceToken + " x", ""},
		{"wrong token", "Bearer wrong-token-0123456789abc", ""},
		{"token prefix", "Bearer " + aliceToken[:20], ""},
		{"token plus suffix", "Bearer " + aliceToken + "x", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = ""
			req := httptest.NewRequest("POST", "/mcp", strings.NewReader("{}"))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tc.owner == "" {
				if rec.Code != http.StatusUnauthorized || got != "" || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("%q: status %d, owner %q; want 401 with WWW-Authenticate", tc.header, rec.Code, got)
				}
				return
			}
			if rec.Code != http.StatusOK || got != tc.owner {
				t.Fatalf("%q: status %d, owner %q; want 200 as %s", tc.header, rec.Code, got, tc.owner)
			}
		})
	}
}

func TestAuthWrapBody(t *testing.T) {
	a := newAuth(nil, nil, slog.New(slog.DiscardHandler))
	var body string
	h := a.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body = string(b)
	}))
	for _, tc := range []struct {
		name   string
		size   int
		status int
	}{
		{"small body passes whole", 10, http.StatusOK},
		{"body over the limit gets 413", MaxBodyBytes + 1, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body = ""
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/mcp", strings.NewReader(strings.Repeat("x", tc.size))))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			if tc.status == http.StatusOK && body != strings.Repeat("x", tc.size) {
				t.Fatalf("handler read %q", body)
			}
		})
	}
}
