package network

import (
	"log/slog"
	"sort"
	"sync"
	"time"
)

// maxDenialKeys caps the distinct refusals a helper remembers (and logs):
// a box probing every address of the internet costs a bounded amount.
const maxDenialKeys = 1024

// Denial is one refused destination, deduplicated by host, port, protocol
// and reason.
type Denial struct {
	Host     string `json:"host"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"` // tcp, udp or dns
	Reason   string `json:"reason"`
	// Count is how often it was refused; First and Last when.
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

type denialKey struct {
	host     string
	port     uint16
	protocol string
	reason   string
}

// Recorder keeps the refusals of one box. Safe for concurrent use.
type Recorder struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	byKey   map[denialKey]*Denial
	evicted int // distinct refusals forgotten to respect the cap
}

// NewRecorder returns a recorder that logs each new refusal to log.
func NewRecorder(log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{log: log, now: time.Now, byKey: map[denialKey]*Denial{}}
}

// Deny records a refusal. A refusal seen before only updates its count and
// time; a new one is logged.
func (r *Recorder) Deny(host string, port uint16, protocol, reason string) {
	k := denialKey{host, port, protocol, reason}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if d := r.byKey[k]; d != nil {
		d.Count++
		d.Last = now
		return
	}
	if len(r.byKey) >= maxDenialKeys {
		var oldest *Denial
		var ok denialKey
		for key, d := range r.byKey {
			if oldest == nil || d.Last.Before(oldest.Last) {
				oldest, ok = d, key
			}
		}
		delete(r.byKey, ok)
		r.evicted++
	}
	r.byKey[k] = &Denial{Host: host, Port: port, Protocol: protocol, Reason: reason, Count: 1, First: now, Last: now}
	r.log.Warn("refused", "host", host, "port", port, "protocol", protocol, "reason", reason)
}

// Since returns the refusals seen at or after t, most recent last, at most
// limit of them, and how many more there were.
func (r *Recorder) Since(t time.Time, limit int) ([]Denial, int) {
	r.mu.Lock()
	var out []Denial
	for _, d := range r.byKey {
		if !d.Last.Before(t) {
			out = append(out, *d)
		}
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Last.Equal(out[j].Last) {
			return out[i].Last.Before(out[j].Last)
		}
		return out[i].Host < out[j].Host
	})
	if limit > 0 && len(out) > limit {
		return out[len(out)-limit:], len(out) - limit
	}
	return out, 0
}
