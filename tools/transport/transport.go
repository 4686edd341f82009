// Package transport serves the MCP server over stdio, streamable HTTP (/mcp)
// and the legacy SSE transport (/sse and /message), with the HTTP security
// mcp-go leaves to us: an Origin allowlist, bearer tokens mapped to box
// owners, a refusal to listen beyond loopback without tokens, sessions bound
// to the owner that opened them and capped per owner and in total, request
// size limits and read timeouts.
//
// Files: transport.go (stdio), http.go (configuration and the HTTP server),
// auth.go (tokens, Origin, bearer parsing, body reading), sessions.go (the
// session table shared by streamable HTTP and SSE).
package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/mark3labs/mcp-go/server"
)

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
