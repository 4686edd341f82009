package netconf

import (
	"fmt"
	"net/netip"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Configure sets up c.Interface and brings lo up too. The caller's thread
// must be in the target network namespace (runtime.LockOSThread).
func Configure(c Config) error {
	if !c.Address.Addr().Is4() || !c.Gateway.Is4() {
		return fmt.Errorf("netconf: IPv4 address and gateway required (%s via %s)", c.Address, c.Gateway)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netconf: socket: %w", err)
	}
	defer unix.Close(s)
	if err := up(s, "lo"); err != nil {
		return fmt.Errorf("netconf: lo up: %w", err)
	}
	ifr := func() *unix.Ifreq {
		r, _ := unix.NewIfreq(c.Interface)
		return r
	}
	if r := ifr(); r == nil {
		return fmt.Errorf("netconf: bad interface name %q", c.Interface)
	}
	if c.MTU > 0 {
		r := ifr()
		r.SetUint32(uint32(c.MTU))
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, r); err != nil {
			return fmt.Errorf("netconf: %s mtu %d: %w", c.Interface, c.MTU, err)
		}
	}
	a4 := c.Address.Addr().As4()
	r := ifr()
	if err := r.SetInet4Addr(a4[:]); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, r); err != nil {
		return fmt.Errorf("netconf: %s address %s: %w", c.Interface, c.Address, err)
	}
	m := [4]byte{}
	for i := 0; i < c.Address.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	r = ifr()
	if err := r.SetInet4Addr(m[:]); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, r); err != nil {
		return fmt.Errorf("netconf: %s netmask: %w", c.Interface, err)
	}
	if err := up(s, c.Interface); err != nil {
		return fmt.Errorf("netconf: %s up: %w", c.Interface, err)
	}
	if err := defaultRoute(s, c.Gateway); err != nil && err != unix.EEXIST {
		return fmt.Errorf("netconf: default route via %s: %w", c.Gateway, err)
	}
	return nil
}

// up sets IFF_UP on an interface.
func up(s int, name string) error {
	r, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, r); err != nil {
		return err
	}
	r.SetUint16(r.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, r)
}

// rtentry is struct rtentry of <net/route.h>; Go lays these field types out
// as C does on every Linux architecture (unsigned long = uintptr).
type rtentry struct {
	pad1    uintptr
	dst     unix.RawSockaddrInet4
	gateway unix.RawSockaddrInet4
	genmask unix.RawSockaddrInet4
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    uintptr
	metric  int16
	dev     *byte
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

// defaultRoute adds 0.0.0.0/0 via gw.
func defaultRoute(s int, gw netip.Addr) error {
	rt := rtentry{flags: unix.RTF_UP | unix.RTF_GATEWAY}
	rt.dst.Family, rt.genmask.Family, rt.gateway.Family = unix.AF_INET, unix.AF_INET, unix.AF_INET
	rt.gateway.Addr = gw.As4()
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), unix.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	runtime.KeepAlive(&rt)
	if e != 0 {
		return e
	}
	return nil
}
