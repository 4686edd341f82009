package guestagent

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// stallWriter blocks its first write for d: the agent's reader is held up
// (a busy host, an agent starved of CPU) right when the process exits.
type stallWriter struct {
	mu   sync.Mutex
	n    int
	once sync.Once
	d    time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { time.Sleep(w.d) })
	w.mu.Lock()
	w.n += len(p)
	w.mu.Unlock()
	return len(p), nil
}

// TestOutputPipeReadsWhatWaits: output that waits in the pipe when the
// process exits is read even if the reader was held up past pipeGrace; only
// an idle pipe (a background child holding it open, writing nothing) is
// given up on. os/exec's WaitDelay, which the agent used before, closes the
// pipe pipeGrace after the exit whatever it still holds.
func TestOutputPipeReadsWhatWaits(t *testing.T) {
	w := &stallWriter{d: 3 * pipeGrace}
	p, wr, err := newOutputPipe(w)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 60<<10) // fits the pipe buffer: the "process" is done writing
	if _, err := wr.Write(data[:1]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the reader takes the first byte and stalls in Write
	if _, err := wr.Write(data[1:]); err != nil {
		t.Fatal(err)
	}
	// The process exited; wr stays open, as if a background child held it.
	done := make(chan struct{})
	go func() { p.finish(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("finish did not give up on an idle pipe")
	}
	wr.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n != len(data) {
		t.Fatalf("read %d of %d bytes that waited in the pipe", w.n, len(data))
	}
}
