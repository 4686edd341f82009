package wire

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestSerialSyncSkipsStaleBytes: stale bytes in both directions (an old
// session's output, garbage before the host's SYNC) do not break the handshake.
func TestSerialSyncSkipsStaleBytes(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	defer guest.Close()
	errc := make(chan error, 1)
	go func() {
		// The guest first emits what an old session left behind, then eats
		// a few bytes of the host's first SYNC as that old session would.
		guest.Write([]byte("\x00\x00\x00\x0cstale yamux bytes"))
		io.ReadFull(guest, make([]byte, 5))
		if err := SyncSerialGuest(guest); err != nil {
			errc <- err
			return
		}
		// After HELO comes the host's hello frame, intact.
		var h Hello
		errc <- ReadJSON(NewReader(guest), FrameHello, &h)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := SyncSerialHost(ctx, host); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(host, FrameHello, Hello{Magic: Magic, Protocol: ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestSerialSyncHostTimesOut(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	go io.Copy(io.Discard, guest) // a guest that never answers
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := SyncSerialHost(ctx, host); err == nil {
		t.Fatal("handshake with a silent guest succeeded")
	}
}
