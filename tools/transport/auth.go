package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/tools"
)

// LoadTokens reads a token file: one "OWNER TOKEN" pair per line, # comments.
func LoadTokens(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	tokens := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("token file %s line %d: want OWNER TOKEN", path, i+1)
		}
		if len(f[1]) < 16 {
			return nil, fmt.Errorf("token file %s line %d: token for %q is shorter than 16 characters", path, i+1, f[0])
		}
		if _, dup := tokens[f[1]]; dup {
			return nil, fmt.Errorf("token file %s line %d: token used twice", path, i+1)
		}
		tokens[f[1]] = f[0]
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("token file %s has no tokens", path)
	}
	return tokens, nil
}

// IsLoopback reports whether a listen address binds only loopback.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type ownerCtxKey struct{}

// ownerOf returns the owner the auth wrapper stored in r's context.
func ownerOf(r *http.Request) string {
	if o, ok := r.Context().Value(ownerCtxKey{}).(string); ok {
		return o
	}
	return tools.LocalOwner
}

// auth is the outermost HTTP layer. It is immutable after newAuth.
type auth struct {
	tokens  map[[sha256.Size]byte]string // sha256(token) → owner; empty: no auth
	origins map[string]bool
	log     *slog.Logger
}

func newAuth(tokens map[string]string, origins []string, log *slog.Logger) *auth {
	a := &auth{tokens: map[[sha256.Size]byte]string{}, origins: map[string]bool{}, log: log}
	for t, o := range tokens {
		a.tokens[sha256.Sum256([]byte(t))] = o
	}
	for _, o := range origins {
		a.origins[strings.TrimRight(o, "/")] = true
	}
	return a
}

// wrap applies, in order: Origin allowlist (403), bearer auth (401), then
// reads the whole body (see readBody).
func (a *auth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !a.originAllowed(o) {
			a.log.Warn("rejected origin", "origin", o, "remote", r.RemoteAddr)
			http.Error(w, "forbidden origin "+o+" (allow it with --allow-origin)", http.StatusForbidden)
			return
		}
		owner := tools.LocalOwner
		if len(a.tokens) > 0 {
			var ok bool
			if owner, ok = a.check(r.Header.Get("Authorization")); !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="boxlite-mcp"`)
				http.Error(w, "missing or invalid bearer token", http.StatusUnauthorized)
				return
			}
		}
		if !readBody(w, r) {
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerCtxKey{}, owner)))
	})
}

// readBody replaces r.Body by its content read in full, or answers 408 (body
// not received within the server's ReadTimeout), 413 or 400 and returns false.
// Reading to the end matters for streams: net/http lifts the connection's
// read deadline (ReadTimeout) once the body is consumed, when it starts
// watching for the client going away; a deadline left pending would cancel
// the request's context in the middle of a long response.
func readBody(w http.ResponseWriter, r *http.Request) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooBig):
			http.Error(w, fmt.Sprintf("request body larger than %d bytes", MaxBodyBytes), http.StatusRequestEntityTooLarge)
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set("Connection", "close")
			http.Error(w, "request body not received in time", http.StatusRequestTimeout)
		default:
			http.Error(w, "cannot read request body", http.StatusBadRequest)
		}
		return false
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return true
}

// bearerToken extracts the token of an "Authorization: Bearer TOKEN" header.
// The scheme is case-insensitive (RFC 9110 section 11.1) and separated from
// the token by one or more spaces (section 11.4: 1*SP); the token is a
// token68, so it contains no whitespace.
func bearerToken(header string) (string, bool) {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.TrimLeft(rest, " ")
	if tok == "" || strings.ContainsAny(tok, " \t") {
		return "", false
	}
	return tok, true
}

// check returns the owner of the request's bearer token. The token is
// hashed and compared with every known hash in constant time, so neither
// its content nor its length shows in the time taken.
func (a *auth) check(header string) (string, bool) {
	tok, ok := bearerToken(header)
	if !ok {
		return "", false
	}
	sum := sha256.Sum256([]byte(tok))
	owner, found := "", false
	for h, o := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], sum[:]) == 1 {
			owner, found = o, true
		}
	}
	return owner, found
}

// originAllowed accepts loopback origins (any port) and the allowlist.
func (a *auth) originAllowed(origin string) bool {
	if a.origins[strings.TrimRight(origin, "/")] {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
