package guestagent

import (
	"encoding/binary"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setClock(unixNano int64) error {
	ts := unix.NsecToTimespec(unixNano)
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

func setHostname(name string) error { return unix.Sethostname([]byte(name)) }

// reseedRandom credits seed to the kernel's entropy pool (RNDADDENTROPY:
// struct rand_pool_info, then the bytes) and forces the CRNG to reseed
// from it at once (RNDRESEEDCRNG).
func reseedRandom(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(seed)*8)) // entropy_count, bits
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(seed)))   // buf_size
	copy(buf[8:], seed)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return e
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return e
	}
	return nil
}
