package guestagent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

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
func (s *Server) ServeSerial(ctx context.Context, name string) error {
	for ctx.Err() == nil {
		dev, err := FindSerialPort(name)
		if err == nil {
			var f *os.File
			if f, err = os.OpenFile(dev, os.O_RDWR, 0); err == nil {
				if err = wire.SyncSerialGuest(f); err == nil {
					err = s.ServeConn(ctx, io.ReadWriteCloser(f))
				} else {
					f.Close()
				}
			}
		}
		if err != nil {
			s.log.Debug("serial session ended", "port", name, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
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
