package session

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// TestBufferedIPC sends messages through zmq4 over the buffered transport
// the agent dials kernels with: frames short and long (the header's long
// form), empty, and larger than the read buffer, many messages back to
// back (so one read holds several), each arriving whole and in order.
func TestBufferedIPC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "k-1")
	pub := zmq4.NewPub(ctx)
	defer pub.Close()
	if err := pub.Listen("ipc://" + path); err != nil {
		t.Fatal(err)
	}
	sub := zmq4.NewSub(ctx, zmq4.WithDialerMaxRetries(40))
	defer sub.Close()
	if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		t.Fatal(err)
	}
	if err := sub.Dial(zmtpScheme + "://" + path); err != nil {
		t.Fatal(err)
	}
	frames := func(i int) [][]byte {
		return [][]byte{[]byte(jupyterDelim), {}, []byte(fmt.Sprint(i)), bytes.Repeat([]byte{byte(i)}, 300),
			bytes.Repeat([]byte("x"), (i%3)*(100<<10))}
	}
	// A SUB misses what is published before it is connected: publish
	// markers until one arrives.
	got := make(chan zmq4.Msg, 1000)
	go func() {
		for {
			m, err := sub.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- m
		}
	}()
	for connected := false; !connected; {
		if err := pub.Send(zmq4.NewMsgString("hello")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			connected = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	const n = 200
	for i := range n {
		if err := pub.SendMulti(zmq4.NewMsgFrom(frames(i)...)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; {
		var m zmq4.Msg
		select {
		case m = <-got:
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d did not arrive", i)
		}
		if len(m.Frames) == 1 && string(m.Frames[0]) == "hello" {
			continue // a late marker
		}
		want := frames(i)
		if len(m.Frames) != len(want) {
			t.Fatalf("message %d: %d frames, want %d", i, len(m.Frames), len(want))
		}
		for j := range want {
			if !bytes.Equal(m.Frames[j], want[j]) {
				t.Fatalf("message %d frame %d: %d bytes differ from the %d sent", i, j, len(m.Frames[j]), len(want[j]))
			}
		}
		i++
	}
}
