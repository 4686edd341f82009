package transport

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/tools"
)

// MaxBodyBytes caps one HTTP request body (16 MiB: the largest tool
// arguments, base64 included, fit with room to spare).
const MaxBodyBytes = 16 << 20

// Defaults of HTTPConfig's limits.
const (
	DefaultMaxSessions       = 256
	DefaultOwnerMaxSessions  = 32
	DefaultSessionIdleTTL    = 30 * time.Minute
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
)

// HTTPConfig configures the HTTP transports. Zero values mean the defaults.
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

	// MaxSessions caps open MCP sessions, streamable HTTP and SSE together
	// (default DefaultMaxSessions); OwnerMaxSessions caps them per owner
	// (default DefaultOwnerMaxSessions). Without Tokens every client is the
	// one local owner and only MaxSessions applies. An initialize over a cap
	// gets 429.
	MaxSessions, OwnerMaxSessions int
	// SessionIdleTTL drops streamable HTTP sessions without a request or
	// stream traffic for this long (default DefaultSessionIdleTTL). An SSE
	// session lasts as long as its stream (dead peers are found by TCP
	// keep-alive and the stream's pings).
	SessionIdleTTL time.Duration
	// ReadHeaderTimeout bounds reading a request's headers, ReadTimeout its
	// headers and body; neither applies to the response, so streams live
	// on. IdleTimeout closes keep-alive connections left idle.
	ReadHeaderTimeout, ReadTimeout, IdleTimeout time.Duration
}

// withDefaults fills zero fields and rejects negative ones.
func (c HTTPConfig) withDefaults() (HTTPConfig, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(c.Tokens) == 0 && !IsLoopback(c.Listen) {
		return c, fmt.Errorf("refusing to serve on %s without --token-file: only loopback addresses may go unauthenticated", c.Listen)
	}
	if c.BaseURL == "" {
		c.BaseURL = "http://" + c.Listen
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{{"max sessions", &c.MaxSessions, DefaultMaxSessions}, {"owner max sessions", &c.OwnerMaxSessions, DefaultOwnerMaxSessions}} {
		if *f.v < 0 {
			return c, fmt.Errorf("%s must not be negative (got %d)", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"session idle TTL", &c.SessionIdleTTL, DefaultSessionIdleTTL}, {"read header timeout", &c.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{"read timeout", &c.ReadTimeout, DefaultReadTimeout}, {"idle timeout", &c.IdleTimeout, DefaultIdleTimeout}} {
		if *f.v < 0 {
			return c, fmt.Errorf("%s must not be negative (got %s)", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if len(c.Tokens) == 0 {
		c.OwnerMaxSessions = c.MaxSessions // one owner: the per-owner cap is the total
	}
	return c, nil
}

// Handler serves /mcp, /sse, /message and /healthz. Close it when done.
type Handler struct {
	http.Handler
	streamable *server.StreamableHTTPServer
	sessions   *sessionTable
	standing   *standingStreams
}

// Close stops mcp-go's idle sweeper and drops the streamable sessions.
func (h *Handler) Close(ctx context.Context) error { return h.streamable.Shutdown(ctx) }

// NewHTTPHandler returns the handler serving /mcp, /sse and /message.
func NewHTTPHandler(cfg HTTPConfig) (*Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := newAuth(cfg.Tokens, cfg.AllowOrigins, cfg.Logger.With("component", "http"))
	sessions := newSessionTable(cfg.MaxSessions, cfg.OwnerMaxSessions, cfg.SessionIdleTTL)
	ownerCtx := func(ctx context.Context, r *http.Request) context.Context {
		return tools.WithOwner(ctx, ownerOf(r))
	}
	streamable := server.NewStreamableHTTPServer(cfg.MCP,
		server.WithSessionIdManagerResolver(streamableIDs{sessions}),
		server.WithSessionIdleTTL(cfg.SessionIdleTTL),
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
		server.WithSessionIDGenerator(sessions.sseSessionID),
	)
	standing := newStandingStreams()
	mux := http.NewServeMux()
	mux.Handle("/mcp", standing.wrap(sessions.streamableGate(streamable)))
	mux.Handle("/sse", sessions.sseStream(sse.SSEHandler()))
	mux.Handle("/message", sessions.sseMessage(sse.MessageHandler()))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return &Handler{Handler: a.wrap(mux), streamable: streamable, sessions: sessions, standing: standing}, nil
}

// newServer returns the HTTP server ServeHTTP runs, with cfg's timeouts.
// There is no WriteTimeout: GET /mcp, GET /sse and long tool calls stream for
// as long as they need; ReadTimeout covers the request only (see readBody).
func newServer(cfg HTTPConfig) (*http.Server, *Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	h, err := NewHTTPHandler(cfg)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: cfg.ReadHeaderTimeout, ReadTimeout: cfg.ReadTimeout,
		IdleTimeout: cfg.IdleTimeout, ErrorLog: log.New(slogWriter{cfg.Logger}, "", 0)}
	srv.RegisterOnShutdown(h.standing.closeAll)
	return srv, h, nil
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
	srv, h, err := newServer(cfg)
	if err != nil {
		l.Close()
		return err
	}
	if ready != nil {
		ready(l.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		h.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // streams (SSE, GET /mcp) never finish by themselves
	}
	h.Close(context.Background())
	return nil
}
