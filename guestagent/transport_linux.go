package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// Listen opens the transport named by spec:
//
//	unix:/path       listen on a unix socket (removing a stale one)
//	vsock:PORT       listen on a vsock port (any CID)
//	fd:N             a listening socket inherited as file descriptor N
//	tcp:ADDR:PORT    listen on TCP, loopback addresses only (a Kubernetes
//	                 pod: the host reaches it through the API server's
//	                 port-forward, which connects inside the pod; the agent
//	                 has no authentication of its own, so it must never
//	                 listen where the pod network reaches it)
//
// A virtio-serial port is not a listener; see ServeSerial.
func Listen(spec string) (net.Listener, error) {
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, fmt.Errorf("transport %q: want unix:PATH, vsock:PORT, fd:N, tcp:127.0.0.1:PORT or serial:NAME", spec)
	}
	switch kind {
	case "unix":
		os.Remove(arg)
		return net.Listen("unix", arg)
	case "vsock":
		port, err := strconv.ParseUint(arg, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("vsock port %q: %w", arg, err)
		}
		return vsock.Listen(uint32(port), nil)
	case "tcp":
		host, _, err := net.SplitHostPort(arg)
		if err != nil {
			return nil, fmt.Errorf("tcp address %q: %w", arg, err)
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("tcp address %q: the agent listens on loopback addresses only (127.0.0.1 or ::1)", arg)
		}
		return net.Listen("tcp", arg)
	case "fd":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 3 {
			return nil, fmt.Errorf("fd %q: want a number >= 3", arg)
		}
		f := os.NewFile(uintptr(n), "listener")
		defer f.Close()
		return net.FileListener(f)
	}
	return nil, fmt.Errorf("transport %q: unknown kind %q", spec, kind)
}

// FindSerialPort returns the /dev path of the virtio-serial port called name.
func FindSerialPort(name string) (string, error) {
	paths, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(p)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q (is the virtio_console module loaded?)", name)
}

// ServeSerial serves the host over the virtio-serial port called name. A
// serial port has no connections: each host session starts with a hello,
// and when a session ends the port is reopened for the next host.
//
// While no host is connected a read of the port returns at once (and poll
// says hang-up), so the agent cannot block on it; instead it asks for
// SIGIO, which the virtio console driver sends when the host side opens
// (or closes) the port, and waits for that. A host therefore gets an
// answer as soon as the guest runs, not after a polling interval (a 100 ms
// poll made every call on a serial-port box, which the host reconnects
// for each call, wait up to 100 ms). A slow poll stays as a fallback for a
// kernel without the signal.
func (s *Server) ServeSerial(ctx context.Context, name string) error {
	sigio := make(chan os.Signal, 1)
	signal.Notify(sigio, syscall.SIGIO)
	defer signal.Stop(sigio)
	for ctx.Err() == nil {
		served, err := s.serveSerialOnce(ctx, name, sigio)
		if err != nil {
			s.log.Debug("serial session ended", "port", name, "err", err)
		}
		if served {
			continue // reopen for the next host at once
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // no port yet, or it failed
		}
	}
	return nil
}

// serialHostWait bounds a wait for the host's SIGIO (the fallback poll).
const serialHostWait = time.Second

// serveSerialOnce opens the port, waits for a host and serves its session;
// served says a session ran (rather than the port failing).
func (s *Server) serveSerialOnce(ctx context.Context, name string, sigio <-chan os.Signal) (served bool, err error) {
	dev, err := FindSerialPort(name)
	if err != nil {
		return false, err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if _, err := unix.FcntlInt(fd, unix.F_SETOWN, os.Getpid()); err == nil {
				if fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err == nil {
					unix.FcntlInt(fd, unix.F_SETFL, fl|unix.O_ASYNC)
				}
			}
		})
	}
	for {
		select { // a signal from before this attempt is stale
		case <-sigio:
		default:
		}
		err = wire.SyncSerialGuest(f)
		if err == nil {
			return true, s.ServeConn(ctx, io.ReadWriteCloser(f))
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			f.Close()
			return false, err
		}
		// No host on the other side: wait until one opens the port.
		select {
		case <-ctx.Done():
			f.Close()
			return false, ctx.Err()
		case <-sigio:
		case <-time.After(serialHostWait):
		}
	}
}

// InstallSelf copies the running binary to dst (mode 0755, through a
// temporary file and a rename): a Kubernetes box's init container puts the
// agent into the volume the box's own container runs it from.
func InstallSelf(dst string) error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".boxlite-guest-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
