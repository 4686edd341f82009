package session

// The ZeroMQ transport the agent dials kernels with: go-zeromq's ipc
// (unix sockets), with reads buffered. zmq4 reads each frame of a message
// with two read calls on the bare connection (its header, then its body):
// a Jupyter message of six frames cost twelve system calls, four messages
// a call. Buffered, a message the kernel wrote at once is one read.

import (
	"bufio"
	"context"
	"net"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/transport"
)

// zmtpScheme is the endpoint scheme of the buffered ipc transport.
const zmtpScheme = "boxlite-ipc"

func init() {
	if err := zmq4.RegisterTransport(zmtpScheme, bufferedIPC{transport.New("unix")}); err != nil {
		panic(err)
	}
}

// bufferedIPC is zmq4's unix-socket transport whose connections buffer reads.
type bufferedIPC struct{ transport.Transport }

func (t bufferedIPC) Dial(ctx context.Context, d transport.Dialer, addr string) (net.Conn, error) {
	c, err := t.Transport.Dial(ctx, d, addr)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

// bufferedConn reads through a buffer. zmq4 reads a connection from one
// goroutine at a time (the handshake, then its reader), so the buffer
// needs no lock.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
