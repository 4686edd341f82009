package transport

import (
	"context"
	"net/http"
	"sync"
)

// standingStreams tracks the streamable transport's standing GET /mcp
// streams, which carry only server-initiated messages and never end by
// themselves: a graceful shutdown ends them at once, so it waits only for
// the calls in flight (whose results travel on their own POST streams)
// instead of its whole grace. The legacy SSE transport's GET /sse is not
// one of them: it carries the results of calls in flight.
type standingStreams struct {
	mu      sync.Mutex
	closing bool
	next    int
	cancels map[int]context.CancelFunc
}

func newStandingStreams() *standingStreams {
	return &standingStreams{cancels: map[int]context.CancelFunc{}}
}

func (s *standingStreams) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			http.Error(w, "the server is shutting down", http.StatusServiceUnavailable)
			return
		}
		id := s.next
		s.next++
		s.cancels[id] = cancel
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.cancels, id)
			s.mu.Unlock()
		}()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// closeAll ends every standing stream and refuses new ones.
func (s *standingStreams) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for _, cancel := range s.cancels {
		cancel()
	}
}
