package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// dialPod opens a connection to port on the pod's loopback through the API
// server's pods/portforward (websocket first, SPDY where the server is
// older), as kubectl port-forward does, without a local listener. The
// returned conn has deadlines (it is one end of a pipe the stream is
// copied through).
func (e *Engine) dialPod(ctx context.Context, ns, pod string, port int) (net.Conn, error) {
	u := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	rt, upgrader, err := spdy.RoundTripperFor(e.rest)
	if err != nil {
		return nil, err
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(u, e.rest); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	type result struct {
		c   httpstream.Connection
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		ch <- result{c, err}
	}()
	var conn httpstream.Connection
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("port-forward to pod %s: %w", pod, r.err)
		}
		conn = r.c
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s: %w", pod, err)
	}
	errStream.Close() // nothing to send on it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s: %w", pod, err)
	}
	local, remote := net.Pipe()
	f := &forward{conn: conn, data: data, local: local}
	go f.copy(remote, errStream)
	return &forwardConn{Conn: local, f: f}, nil
}

// forward is one port-forwarded connection.
type forward struct {
	conn  httpstream.Connection
	data  httpstream.Stream
	local net.Conn
	once  sync.Once
	// remoteErr is what the kubelet said on the error stream (e.g. nothing
	// listens on the port yet).
	remoteErr atomic.Value
}

func (f *forward) copy(pipe net.Conn, errStream httpstream.Stream) {
	go func() {
		msg, _ := io.ReadAll(errStream)
		if len(msg) > 0 {
			f.remoteErr.Store(string(msg))
			f.close()
		}
	}()
	done := make(chan struct{})
	go func() {
		io.Copy(pipe, f.data)
		pipe.Close()
		close(done)
	}()
	io.Copy(f.data, pipe)
	f.data.Close()
	<-done
	f.close()
}

func (f *forward) close() {
	f.once.Do(func() {
		f.data.Reset()
		f.conn.Close()
		f.local.Close()
	})
}

type forwardConn struct {
	net.Conn
	f *forward
}

func (c *forwardConn) Close() error {
	c.f.close()
	return nil
}

func (c *forwardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		if msg, _ := c.f.remoteErr.Load().(string); msg != "" {
			return n, fmt.Errorf("port-forward: %s", msg)
		}
	}
	return n, err
}
