// Package transport serves the MCP server over stdio, streamable HTTP (/mcp)
// and the legacy SSE transport (/sse and /message), with the HTTP security
// mcp-go leaves to us: an Origin allowlist, bearer tokens mapped to box
// owners, a refusal to listen beyond loopback without tokens, and request
// size limits.
package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/tools"
)

// MaxBodyBytes caps one HTTP request body (16 MiB: the largest tool
// arguments, base64 included, fit with room to spare).
const MaxBodyBytes = 16 << 20

// MaxLineBytes caps one stdio message; longer lines are dropped whole and
// answered with a parse error.
const MaxLineBytes = 32 << 20

// ServeStdio serves srv on in/out until in ends or ctx is done. Boxes belong
// to tools.LocalOwner.
func ServeStdio(ctx context.Context, srv *server.MCPServer, in io.Reader, out io.Writer, logger *slog.Logger) error {
	s := server.NewStdioServer(srv)
	s.SetErrorLogger(log.New(slogWriter{logger}, "", 0))
	server.WithWorkerPoolSize(32)(s)
	server.WithQueueSize(1000)(s)
	err := s.Listen(ctx, &lineLimiter{r: bufio.NewReaderSize(in, 64<<10), max: MaxLineBytes}, out)
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)), "component", "mcp-stdio")
	return len(p), nil
}

// lineLimiter passes lines through, replacing any line longer than max by an
// unparseable one, so the server answers with an error instead of buffering it.
type lineLimiter struct {
	r       *bufio.Reader
	max     int
	cur     int  // bytes of the current line passed so far
	discard bool // dropping the rest of an oversize line
	pending []byte
}

func (l *lineLimiter) Read(p []byte) (int, error) {
	if len(l.pending) > 0 {
		n := copy(p, l.pending)
		l.pending = l.pending[n:]
		return n, nil
	}
	for {
		b, err := l.r.ReadSlice('\n')
		full := err == nil
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) && len(b) == 0 {
			return 0, err
		}
		if l.discard {
			if full {
				l.discard, l.cur = false, 0
			}
			continue
		}
		if l.cur+len(b) > l.max {
			// End what was passed as an unparseable line; drop the rest.
			l.pending = []byte("\x00\n")
			l.discard, l.cur = !full, 0
			return l.Read(p)
		}
		if full {
			l.cur = 0
		} else {
			l.cur += len(b)
		}
		n := copy(p, b) // b is only valid until the next read
		if n < len(b) {
			l.pending = append([]byte{}, b[n:]...)
		}
		return n, nil
	}
}

// HTTPConfig configures the HTTP transports.
type HTTPConfig struct {
	MCP    *server.MCPServer
	Listen string // host:port
	// Tokens maps bearer tokens to owners; empty means no auth (loopback only).
	Tokens map[string]string
	// AllowOrigins are extra allowed Origin values (exact, e.g. https://app.example).
	AllowOrigins []string
	// BaseURL is the externally visible URL for the SSE endpoint event (default http://Listen).
	BaseURL string
	Logger  *slog.Logger
}

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

// NewHTTPHandler returns the handler serving /mcp, /sse and /message.
func NewHTTPHandler(cfg HTTPConfig) (http.Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Tokens) == 0 && !IsLoopback(cfg.Listen) {
		return nil, fmt.Errorf("refusing to serve on %s without --token-file: only loopback addresses may go unauthenticated", cfg.Listen)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = "http://" + cfg.Listen
	}
	a := &auth{tokens: cfg.Tokens, origins: map[string]bool{}, log: cfg.Logger.With("component", "http")}
	for _, o := range cfg.AllowOrigins {
		a.origins[strings.TrimRight(o, "/")] = true
	}
	ownerCtx := func(ctx context.Context, r *http.Request) context.Context {
		return tools.WithOwner(ctx, ownerOf(r))
	}
	streamable := server.NewStreamableHTTPServer(cfg.MCP,
		server.WithStateful(true),
		server.WithSessionIdleTTL(30*time.Minute),
		server.WithHeartbeatInterval(15*time.Second),
		server.WithHTTPContextFunc(ownerCtx),
		server.WithStreamableHTTPLogger(cfg.Logger.With("component", "mcp-http")),
	)
	sse := server.NewSSEServer(cfg.MCP,
		server.WithBaseURL(cfg.BaseURL),
		server.WithUseFullURLForMessageEndpoint(false),
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		server.WithKeepAlive(true),
		server.WithKeepAliveInterval(15*time.Second),
		server.WithSSEContextFunc(ownerCtx),
		server.WithSessionIDGenerator(func(ctx context.Context, r *http.Request) (string, error) {
			var b [16]byte
			rand.Read(b[:])
			id := hex.EncodeToString(b[:])
			a.sseOwners.Store(id, ownerOf(r))
			return id, nil
		}),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", streamable)
	mux.Handle("/sse", sse.SSEHandler())
	mux.Handle("/message", a.sseSessionOwner(sse.MessageHandler()))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return a.wrap(mux), nil
}

type ownerCtxKey struct{}

func ownerOf(r *http.Request) string {
	if o, ok := r.Context().Value(ownerCtxKey{}).(string); ok {
		return o
	}
	return tools.LocalOwner
}

type auth struct {
	tokens    map[string]string
	origins   map[string]bool
	sseOwners sync.Map // SSE session id → owner who opened it
	log       *slog.Logger
}

// wrap applies, in order: Origin allowlist (403), bearer auth (401), body limit.
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
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerCtxKey{}, owner)))
	})
}

// check returns the owner of the request's bearer token; comparisons take
// constant time per token.
func (a *auth) check(header string) (string, bool) {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	owner, found := "", false
	for t, o := range a.tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
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

// sseSessionOwner lets only the owner who opened an SSE session post to it.
func (a *auth) sseSessionOwner(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.URL.Query().Get("sessionId"); id != "" {
			if o, ok := a.sseOwners.Load(id); ok && o.(string) != ownerOf(r) {
				http.Error(w, "this SSE session belongs to another owner", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// ServeHTTP listens on cfg.Listen and serves until ctx is done, then shuts
// down gracefully within grace. ready, when non-nil, receives the bound address.
func ServeHTTP(ctx context.Context, cfg HTTPConfig, grace time.Duration, ready func(addr string)) error {
	if len(cfg.Tokens) == 0 && !IsLoopback(cfg.Listen) {
		return fmt.Errorf("refusing to serve on %s without --token-file: only loopback addresses may go unauthenticated", cfg.Listen)
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = "http://" + l.Addr().String()
	}
	h, err := NewHTTPHandler(cfg)
	if err != nil {
		l.Close()
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(slogWriter{cfg.Logger}, "", 0)}
	if ready != nil {
		ready(l.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // streams (SSE, GET /mcp) never finish by themselves
	}
	return nil
}
