package krun

/*
#include <stdint.h>
#include <stdlib.h>

static int32_t k_net_unixstream(void *f, uint32_t c, const char *path, int fd, uint8_t *mac, uint32_t features, uint32_t flags) {
	return ((int32_t (*)(uint32_t, const char *, int, uint8_t *const, uint32_t, uint32_t))f)(c, path, fd, mac, features, flags);
}
*/
import "C"

import (
	"fmt"
	"net"
	"unsafe"
)

// netUnixstream is libkrun's unix-stream network API (passt and gvproxy's
// QEMU framing: a 4-byte big-endian length before each frame).
const netUnixstream = "krun_add_net_unixstream"

// netFeatures are the virtio-net offloads offered to the guest: none. The
// helper takes plain Ethernet frames of at most the MTU (it drops larger
// ones), so the guest segments and checksums itself (no TSO/UFO/CSUM).
const netFeatures = 0

// CanNetwork reports whether the library can give a VM a virtio-net link
// to the box's network helper (krun_add_net_unixstream).
func (l *Lib) CanNetwork() bool {
	if l.syms[netUnixstream] == nil {
		l.lookup(netUnixstream)
	}
	return l.syms[netUnixstream] != nil
}

// AddNetUnixstream adds a virtio-net NIC (eth0) with MAC mac whose frames
// go over the connected unix stream socket fd, or (fd < 0) the one at path,
// which libkrun connects to.
func (l *Lib) AddNetUnixstream(ctx uint32, path string, fd int, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("%s: bad MAC %q", netUnixstream, mac)
	}
	l.CanNetwork()
	var cpath *C.char // NULL with a descriptor
	if fd < 0 {
		cpath = C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
	}
	cmac := (*C.uint8_t)(C.malloc(6))
	defer C.free(unsafe.Pointer(cmac))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(cmac)), 6), hw)
	return l.call(netUnixstream, func(p unsafe.Pointer) C.int32_t {
		return C.k_net_unixstream(p, C.uint32_t(ctx), cpath, C.int(fd), cmac, netFeatures, 0)
	})
}
