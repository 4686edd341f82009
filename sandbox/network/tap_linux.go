package network

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
)

// CreateTap creates the tap device c.Interface in the network namespace of
// process pid, configures it (address, MTU, up, default route; lo up) and
// returns its descriptor, which carries one Ethernet frame per read and
// write (serve it with ServeFile, or hand it to the helper). The device
// lives as long as the descriptor and the namespace. The caller needs
// CAP_SYS_ADMIN and CAP_NET_ADMIN over that namespace (host root).
func CreateTap(pid int, c netconf.Config) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread enters the box's namespace. If it cannot come back it
		// stays locked, and the runtime ends it with this goroutine.
		runtime.LockOSThread()
		f, err := func() (*os.File, error) {
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return nil, err
			}
			defer self.Close()
			target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				return nil, fmt.Errorf("the box's network namespace: %w", err)
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("entering the box's network namespace: %w", err)
			}
			f, err := openTap(c.Interface)
			if err == nil {
				if err = netconf.Configure(c); err != nil {
					f.Close()
					f = nil
				}
			}
			if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			return f, err
		}()
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

// openTap creates tap device name in the calling thread's network namespace.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:unix.IFNAMSIZ-1], name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("creating tap %s: %w", name, e)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
