package wire

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// A virtio-serial port has no connections: bytes the guest wrote for a host
// that went away reach the next host, and a guest may still be reading with
// an old session when a new host starts talking. Before the hello, both
// sides therefore synchronise on the raw byte stream:
//
//	host:  SYNC+nonce, repeated until acknowledged: after 5 ms, then at
//	       twice the last interval up to every 100 ms
//	guest: scans for SYNC, answers ACK+nonce
//	host:  skips everything up to ACK+nonce, then sends HELO
//	guest: skips repeated SYNCs up to HELO; the Hello frame follows
//
// A guest session that still runs eats some SYNCs, fails on them and ends;
// the guest then scans and catches a later one.
// Each marker starts with 0xff, which is not a valid yamux version byte: a
// stale guest session that reads it fails at once instead of waiting for a
// frame body.
var (
	serialSync = []byte("\xffBXSYNC\xfe")
	serialAck  = []byte("\xffBXACK!\xfe")
	serialHelo = []byte("\xffBXHELO\xfe")
)

const nonceLen = 8

// serialSyncEvery is the longest interval between the host's SYNCs.
const serialSyncEvery = 100 * time.Millisecond

// SyncSerialHost runs the host side of the handshake on conn.
func SyncSerialHost(ctx context.Context, conn net.Conn) error {
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	msg := append(append([]byte{}, serialSync...), nonce...)
	// The repeater and the final HELO never interleave: HELO is written
	// only after the repeater has stopped, under the same lock.
	var mu sync.Mutex
	stopped := false
	stopRepeater := func() { mu.Lock(); stopped = true; mu.Unlock() }
	defer stopRepeater()
	writeErr := make(chan error, 1)
	go func() {
		// A host that reconnects at once (the host reconnects for every
		// call on an exclusive port) usually meets the guest's previous
		// session, which eats the first SYNC: the next one must follow
		// soon, or every such call waits a whole interval.
		interval := 5 * time.Millisecond
		t := time.NewTimer(interval)
		defer t.Stop()
		for {
			mu.Lock()
			if stopped {
				mu.Unlock()
				return
			}
			// A port nobody reads applies backpressure: never block
			// holding the lock (a short deadline skips a round instead).
			conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := conn.Write(msg)
			conn.SetWriteDeadline(time.Time{})
			mu.Unlock()
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				writeErr <- err
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			interval = min(2*interval, serialSyncEvery)
			t.Reset(interval)
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	want := append(append([]byte{}, serialAck...), nonce...)
	if err := scanFor(conn, want, nil); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case werr := <-writeErr:
			return werr
		default:
		}
		return err
	}
	conn.SetReadDeadline(time.Time{})
	mu.Lock()
	stopped = true
	_, err := conn.Write(serialHelo)
	mu.Unlock()
	return err
}

// SyncSerialGuest runs the guest side of the handshake on a port. It reads
// one byte at a time so nothing after HELO is consumed.
func SyncSerialGuest(rw io.ReadWriter) error {
	var nonce []byte
	if err := scanFor(rw, serialSync, func(r io.Reader) error {
		nonce = make([]byte, nonceLen)
		_, err := io.ReadFull(r, nonce)
		return err
	}); err != nil {
		return err
	}
	if _, err := rw.Write(append(append([]byte{}, serialAck...), nonce...)); err != nil {
		return err
	}
	return scanFor(rw, serialHelo, nil)
}

// scanFor reads byte by byte until the stream has shown pattern, then runs
// after (if any) on the reader.
func scanFor(r io.Reader, pattern []byte, after func(io.Reader) error) error {
	window := make([]byte, 0, len(pattern))
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 0 {
			if err == nil {
				continue
			}
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if len(window) == len(pattern) {
			window = append(window[:0], window[1:]...)
		}
		window = append(window, b[0])
		if bytes.Equal(window, pattern) {
			if after != nil {
				return after(r)
			}
			return nil
		}
	}
}
