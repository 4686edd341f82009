// Package enginetest holds a fake engine for tests of the layers above the
// engines, and a conformance suite every engine must pass.
//
// The fake runs the real guest agent in-process on the box's unix socket, so
// calls really cross the wire protocol; only "the box process" is simulated.
// Boxes live in a World shared by Fake instances, standing in for host
// processes that outlive a server: a new Fake on the same World is a
// restarted server.
package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// World is the simulated host: the fake boxes that are "running".
type World struct {
	mu    sync.Mutex
	boxes map[string]*fakeBox // box id → running box
	next  atomic.Int64
	// StartDelay is added to every start (tests of concurrency).
	StartDelay time.Duration
	// FailStart, when set, makes Start fail with this error.
	FailStart error
	// Starts counts Start calls.
	Starts atomic.Int64
	// Snapshots configures the fake's snapshots (fake_snapshot.go).
	Snapshots SnapshotConfig
}

// NewWorld returns an empty World.
func NewWorld() *World { return &World{boxes: map[string]*fakeBox{}} }

type fakeBox struct {
	token  int64
	cancel context.CancelFunc
	done   chan struct{}
}

type fakeState struct {
	Token int64 `json:"token"`
}

// Fake is an engine whose boxes are in-process agents. Safe for concurrent use.
type Fake struct {
	W *World
	// EngineName defaults to "fake".
	EngineName string
	// Unusable, when set, makes Available report this reason.
	Unusable string
}

var _ sandbox.Engine = (*Fake)(nil)

// Name implements sandbox.Engine.
func (f *Fake) Name() string {
	if f.EngineName != "" {
		return f.EngineName
	}
	return "fake"
}

// Available implements sandbox.Engine.
func (f *Fake) Available(context.Context) sandbox.Availability {
	if f.Unusable != "" {
		return sandbox.Availability{Usable: false, Reason: f.Unusable}
	}
	return sandbox.Availability{Usable: true, Reason: "in-process test engine", Isolation: "none (test double)"}
}

// Start implements sandbox.Engine.
func (f *Fake) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Handle, error) {
	f.W.Starts.Add(1)
	if f.W.FailStart != nil {
		return sandbox.Handle{}, f.W.FailStart
	}
	select {
	case <-time.After(f.W.StartDelay):
	case <-ctx.Done():
		return sandbox.Handle{}, ctx.Err()
	}
	if err := f.cloneDisk(spec); err != nil {
		return sandbox.Handle{}, err
	}
	f.W.mu.Lock()
	defer f.W.mu.Unlock()
	if _, ok := f.W.boxes[spec.ID]; ok {
		return sandbox.Handle{}, fmt.Errorf("fake box %s already running", spec.ID)
	}
	os.Remove(spec.Socket)
	l, err := net.Listen("unix", spec.Socket)
	if err != nil {
		return sandbox.Handle{}, err
	}
	bctx, cancel := context.WithCancel(context.Background())
	b := &fakeBox{token: f.W.next.Add(1), cancel: cancel, done: make(chan struct{})}
	srv := guestagent.NewServer(guestagent.Config{PowerOff: func(bool) { f.Kill(spec.ID) }})
	go func() { defer close(b.done); srv.Serve(bctx, l) }()
	f.W.boxes[spec.ID] = b
	st, _ := json.Marshal(fakeState{Token: b.token})
	return sandbox.Handle{Version: 1, Engine: f.Name(), State: st}, nil
}

// Wait implements sandbox.Engine.
func (f *Fake) Wait(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	var st fakeState
	json.Unmarshal(h.State, &st)
	f.W.mu.Lock()
	b := f.W.boxes[spec.ID]
	f.W.mu.Unlock()
	if b == nil || b.token != st.Token {
		return nil
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill simulates the box process dying: the agent and its connections go away.
func (f *Fake) Kill(id string) {
	f.W.mu.Lock()
	b := f.W.boxes[id]
	delete(f.W.boxes, id)
	f.W.mu.Unlock()
	if b != nil {
		b.cancel()
		<-b.done
	}
}

// KillAll kills every box in the World (a host reboot).
func (w *World) KillAll() {
	w.mu.Lock()
	boxes := w.boxes
	w.boxes = map[string]*fakeBox{}
	w.mu.Unlock()
	for _, b := range boxes {
		b.cancel()
		<-b.done
	}
}

// Running reports how many fake boxes run.
func (w *World) Running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.boxes)
}

func (f *Fake) alive(id string, h sandbox.Handle) bool {
	var st fakeState
	json.Unmarshal(h.State, &st)
	f.W.mu.Lock()
	defer f.W.mu.Unlock()
	b := f.W.boxes[id]
	return b != nil && b.token == st.Token
}

// Recover implements sandbox.Engine.
func (f *Fake) Recover(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	if !f.alive(spec.ID, h) {
		os.Remove(spec.Socket)
		return sandbox.ErrNotRunning
	}
	return nil
}

// Dial implements sandbox.Engine.
func (f *Fake) Dial(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", spec.Socket)
}

// Stop implements sandbox.Engine.
func (f *Fake) Stop(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, grace time.Duration) error {
	f.Kill(spec.ID)
	os.Remove(spec.Socket)
	return nil
}

// Destroy implements sandbox.Engine.
func (f *Fake) Destroy(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	f.Kill(spec.ID)
	os.Remove(spec.Socket)
	return os.RemoveAll(spec.BoxDir)
}
