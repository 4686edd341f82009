package network

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// dialTimeout bounds opening the host side of a connection.
	dialTimeout = 10 * time.Second
	// udpIdle ends a UDP flow with no traffic either way for this long.
	udpIdle = 60 * time.Second
)

func dest(id stack.TransportEndpointID) string {
	a, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	return net.JoinHostPort(a.String(), strconv.Itoa(int(id.LocalPort)))
}

// take takes a slot of sem without waiting.
func take(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// forwardTCP proxies one allowed TCP connection of the guest to the host
// side. It runs in its own goroutine (the forwarder starts one per SYN).
func (st *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	if !take(st.tcpSlots) {
		r.Complete(true)
		a, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
		st.rec.Deny(a.String(), id.LocalPort, "tcp", fmt.Sprintf("too many connections (limit %d)", st.cfg.MaxTCP))
		return
	}
	defer func() { <-st.tcpSlots }()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	out, err := st.cfg.Dial(ctx, "tcp", dest(id))
	cancel()
	if err != nil {
		st.log.Debug("dial failed", "dest", dest(id), "err", err)
		r.Complete(true)
		return
	}
	defer out.Close()
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		return
	}
	in := gonet.NewTCPConn(&wq, ep)
	defer in.Close()
	proxy(in, out)
}

// halfCloser is a connection whose write side can be closed alone.
type halfCloser interface {
	CloseWrite() error
}

// proxy copies both ways until both directions ended, passing half-closes on.
func proxy(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// forwardUDP relays one allowed UDP flow of the guest (one source port to
// one destination) until it is idle for udpIdle.
func (st *Stack) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	if !take(st.udpSlots) {
		a, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
		st.rec.Deny(a.String(), id.LocalPort, "udp", fmt.Sprintf("too many UDP flows (limit %d)", st.cfg.MaxUDP))
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		<-st.udpSlots
		return
	}
	in := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer func() { <-st.udpSlots }()
		defer in.Close()
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		out, err := st.cfg.Dial(ctx, "udp", dest(id))
		cancel()
		if err != nil {
			return
		}
		defer out.Close()
		relayUDP(in, out)
	}()
}

// relayUDP copies datagrams both ways until neither side sent one for udpIdle.
func relayUDP(in, out net.Conn) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(done); in.Close(); out.Close() }) }
	cp := func(dst, src net.Conn) {
		defer stop()
		buf := make([]byte, 64<<10)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdle))
			n, err := src.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < udpIdle {
					continue
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go cp(out, in)
	cp(in, out)
	<-done
}
