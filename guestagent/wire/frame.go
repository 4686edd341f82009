// Package wire is the protocol between boxlite-mcp (the host) and the guest
// agent running inside every box.
//
// One byte stream (vsock, a virtio-serial port or a unix socket) carries a
// versioned hello, then a yamux session; every call runs on its own yamux
// stream. On a stream, both sides exchange frames:
//
//	+----------------+--------+-----------------+
//	| length: uint32 | type:u8| payload         |
//	+----------------+--------+-----------------+
//
// length counts the type byte and the payload, big-endian. A frame larger than
// MaxFrame is rejected before anything is allocated for it. Control frames
// (Request, Result, Hello) carry JSON; data frames carry raw bytes.
//
// A call is: the host writes one Request frame; for exec it may follow with
// Stdin, EOF and Cancel frames, for write_file with Data frames and EOF. The
// agent answers with Stdout/Stderr/Data frames and ends with one Result frame.
//
// wire imports nothing else of boxlite-mcp.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameType says what a frame's payload is.
type FrameType uint8

// Frame types. Values are part of the protocol: never renumber.
const (
	FrameHello      FrameType = 1  // host → agent, JSON Hello
	FrameHelloReply FrameType = 2  // agent → host, JSON HelloReply
	FrameRequest    FrameType = 3  // host → agent, JSON Request
	FrameResult     FrameType = 4  // agent → host, JSON Result; ends the call
	FrameStdin      FrameType = 5  // host → agent, raw bytes
	FrameStdout     FrameType = 6  // agent → host, raw bytes
	FrameStderr     FrameType = 7  // agent → host, raw bytes
	FrameData       FrameType = 8  // file contents, either direction
	FrameEOF        FrameType = 9  // end of stdin or data; empty payload
	FrameCancel     FrameType = 10 // host → agent: kill the call's work (interrupt a session's code); empty payload
	FrameOutput     FrameType = 11 // agent → host, JSON OutputHeader; its Data frames follow
	maxFrameType              = FrameOutput
)

func (t FrameType) String() string {
	names := [...]string{"invalid", "hello", "hello-reply", "request", "result", "stdin", "stdout", "stderr", "data", "eof", "cancel", "output"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

const (
	// MaxFrame is the largest payload a frame may carry (1 MiB).
	MaxFrame = 1 << 20
	// MaxControl is the largest JSON payload (Request, Result, Hello) accepted (256 KiB).
	MaxControl = 256 << 10
	// ChunkSize is the payload size writers use for data frames.
	ChunkSize  = 64 << 10
	headerSize = 5
)

// Decoding errors.
var (
	ErrFrameTooLarge = errors.New("wire: frame too large")
	ErrBadFrame      = errors.New("wire: malformed frame")
)

// Frame is one decoded frame. Payload is only valid until the next ReadFrame
// on the same Reader.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// Reader decodes frames from a stream, reusing one buffer.
type Reader struct {
	r   io.Reader
	hdr [headerSize]byte
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// ReadFrame reads the next frame. io.EOF means the stream ended cleanly
// between frames; io.ErrUnexpectedEOF means it ended inside one. Oversize and
// unknown frames are rejected before the payload is read.
func (r *Reader) ReadFrame() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(r.hdr[:4])
	t := FrameType(r.hdr[4])
	if n == 0 {
		return Frame{}, fmt.Errorf("%w: zero length", ErrBadFrame)
	}
	if t == 0 || t > maxFrameType {
		return Frame{}, fmt.Errorf("%w: unknown type %d", ErrBadFrame, uint8(t))
	}
	size := int64(n) - 1
	if size > MaxFrame {
		return Frame{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrFrameTooLarge, size, MaxFrame)
	}
	if isControl(t) && size > MaxControl {
		return Frame{}, fmt.Errorf("%w: %s of %d bytes (limit %d)", ErrFrameTooLarge, t, size, MaxControl)
	}
	if int64(cap(r.buf)) < size {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:size]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: t, Payload: r.buf}, nil
}

func isControl(t FrameType) bool {
	return t == FrameHello || t == FrameHelloReply || t == FrameRequest || t == FrameResult || t == FrameOutput
}

// WriteFrame writes one frame. Payloads over MaxFrame are an error; use
// WriteData to send larger byte slices as several frames.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(payload))
	}
	// One Write per frame keeps frames whole when writers share a stream
	// under a mutex, and costs one syscall-equivalent on yamux.
	buf := make([]byte, headerSize+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)+1))
	buf[4] = byte(t)
	copy(buf[headerSize:], payload)
	_, err := w.Write(buf)
	return err
}

// WriteData writes p as one or more frames of type t, ChunkSize bytes each.
func WriteData(w io.Writer, t FrameType, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), ChunkSize)
		if err := WriteFrame(w, t, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
