package network

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Frames are Ethernet frames of at most MTU bytes of payload. The switch
// of gvisor-tap-vsock trusts the frames it is given (a short frame would
// crash it, a huge length prefix would allocate it), so every link hands
// it frames through packetConn, which checks them first.
const (
	ethHeader = 14
	maxFrame  = MTU + ethHeader + 4 // a VLAN tag at most
)

// packetConn is a link to the guest as a net.Conn whose Read returns one
// valid frame and whose Write sends one frame: what the switch's "vfkit"
// (bare L2 datagram) protocol expects.
type packetConn struct {
	readFrame  func(b []byte) (int, error)
	writeFrame func(b []byte) error
	close      func() error
	closeOnce  sync.Once
}

// Read returns the next frame of a valid size; invalid ones are dropped.
func (c *packetConn) Read(b []byte) (int, error) {
	for {
		n, err := c.readFrame(b)
		if err != nil {
			return 0, err
		}
		if n >= ethHeader && n <= maxFrame {
			return n, nil
		}
	}
}

func (c *packetConn) Write(b []byte) (int, error) {
	if err := c.writeFrame(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *packetConn) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.close() })
	return err
}

func (c *packetConn) LocalAddr() net.Addr                { return linkAddr{} }
func (c *packetConn) RemoteAddr() net.Addr               { return linkAddr{} }
func (c *packetConn) SetDeadline(t time.Time) error      { return nil }
func (c *packetConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *packetConn) SetWriteDeadline(t time.Time) error { return nil }

type linkAddr struct{}

func (linkAddr) Network() string { return "link" }
func (linkAddr) String() string  { return "guest" }

// fileLink is a link over a descriptor that carries one frame per read and
// write: a tap device (IFF_TAP|IFF_NO_PI) or a SOCK_SEQPACKET/SOCK_DGRAM
// socket. The descriptor is made non-blocking (the runtime's poller then
// waits for it, and Close interrupts a pending read).
func fileLink(fd int, name string) (*packetConn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("link descriptor: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	var wmu sync.Mutex
	return &packetConn{
		readFrame: f.Read,
		writeFrame: func(b []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			_, err := f.Write(b)
			return err
		},
		close: f.Close,
	}, nil
}

// streamLink is a link over QEMU's stream netdev (and passt's protocol):
// each frame is preceded by its length as a 32-bit big-endian integer.
func streamLink(c net.Conn) *packetConn {
	r := bufio.NewReaderSize(c, 64<<10)
	var wmu sync.Mutex
	var hdr [4]byte
	wbuf := make([]byte, 0, 4+maxFrame)
	return &packetConn{
		readFrame: func(b []byte) (int, error) {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return 0, err
			}
			n := binary.BigEndian.Uint32(hdr[:])
			if n > maxFrame || int(n) > len(b) {
				// Not a frame QEMU would send: the stream is corrupt.
				return 0, fmt.Errorf("frame of %d bytes on the stream link", n)
			}
			if _, err := io.ReadFull(r, b[:n]); err != nil {
				return 0, err
			}
			return int(n), nil
		},
		writeFrame: func(b []byte) error {
			if len(b) > maxFrame {
				return errors.New("frame too large")
			}
			wmu.Lock()
			defer wmu.Unlock()
			wbuf = binary.BigEndian.AppendUint32(wbuf[:0], uint32(len(b)))
			wbuf = append(wbuf, b...)
			_, err := c.Write(wbuf)
			return err
		},
		close: c.Close,
	}
}
