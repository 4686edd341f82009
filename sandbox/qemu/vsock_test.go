package qemu_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

// TestVsockDialCancelled: a vsock dial whose caller gives up leaves no
// goroutine blocked in the connect and no connection open, even when the
// connect completes just as the caller gives up. (The guest is a stand-in:
// the CI hosts have no vhost-vsock.)
func TestVsockDialCancelled(t *testing.T) {
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	peers := make(chan net.Conn, 1)
	// A guest that accepts as soon as the dial's context ends (or, for a
	// dial that cannot be cancelled, when the test releases it).
	defer qemu.SetVsockDialer(func(ctx context.Context, cid, port uint32) (net.Conn, error) {
		select {
		case <-ctx.Done():
		case <-release:
		}
		c, peer := net.Pipe()
		peers <- peer
		return c, nil
	})()
	self, err := proc.Of(os.Getpid()) // a live process standing in for QEMU
	if err != nil {
		t.Fatal(err)
	}
	eng := qemu.New(qemu.Config{})
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	conn, err := eng.Dial(ctx, sandbox.Spec{ID: "box"}, qemu.VsockHandle(1003, self))
	if err == nil {
		conn.Close()
		t.Fatal("Dial returned a connection after its context ended")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v; want the context's error", err)
	}
	// Nothing is left blocked in the connect.
	for settle := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(settle); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine() - before; n > 0 {
		t.Errorf("%d goroutine(s) left behind by a cancelled dial", n)
	}
	// The connection the connect produced is closed, not leaked.
	close(release)
	released = true
	select {
	case peer := <-peers:
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("the connection of a cancelled dial was left open (read: %v)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dial never ran")
	}
}
