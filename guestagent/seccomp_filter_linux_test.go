//go:build amd64 || arm64

package guestagent

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// scall is one seccomp_data: a number, an architecture and the low halves of
// the first arguments.
type scall struct {
	arch uint32
	nr   uint32
	args [2]uint32
}

// verdict runs the compiled jail filter on c in a BPF interpreter. The
// interpreter loads words big-endian, so the words are stored that way.
func verdict(t *testing.T, vm *bpf.VM, c scall) uint32 {
	t.Helper()
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[offNr:], c.nr)
	binary.BigEndian.PutUint32(data[offArch:], c.arch)
	for i, a := range c.args {
		binary.BigEndian.PutUint32(data[offArgs+8*i:], a)
	}
	r, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(r)
}

func jailVM(t *testing.T, ptraceOK bool) *bpf.VM {
	t.Helper()
	prog, err := jailProfile(ptraceOK).program()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog) // checks every jump lands inside and the program ends in a return
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatal(err)
	}
	t.Logf("filter: %d instructions", len(prog))
	return vm
}

type verdictCase struct {
	name string
	c    scall
	want uint32
}

func TestSeccompProfileVerdicts(t *testing.T) {
	vm := jailVM(t, true)
	native := uint32(nativeArch)
	eperm, enosys := retErrno(unix.EPERM), retErrno(unix.ENOSYS)
	tests := []verdictCase{
		// The ABI comes first: foreign architectures die whatever the number.
		{"i386 unshare", scall{arch: unix.AUDIT_ARCH_I386, nr: 310, args: [2]uint32{unix.CLONE_NEWUSER}}, retKill},
		{"i386 read", scall{arch: unix.AUDIT_ARCH_I386, nr: 3}, retKill},
		{"arm compat read", scall{arch: unix.AUDIT_ARCH_ARM, nr: 3}, retKill},
		{"arch zero", scall{arch: 0, nr: unix.SYS_READ}, retKill},
		{"tracer-skipped call", scall{arch: native, nr: nrSkip}, retAllow},
		// Plain allows and refusals.
		{"read", scall{arch: native, nr: unix.SYS_READ}, retAllow},
		{"clone3", scall{arch: native, nr: unix.SYS_CLONE3}, retAllow},
		{"execve", scall{arch: native, nr: unix.SYS_EXECVE}, retAllow},
		{"ptrace on >= 4.8", scall{arch: native, nr: unix.SYS_PTRACE, args: [2]uint32{unix.PTRACE_ATTACH, 1}}, retAllow},
		{"mount", scall{arch: native, nr: unix.SYS_MOUNT}, eperm},
		{"unshare", scall{arch: native, nr: unix.SYS_UNSHARE, args: [2]uint32{unix.CLONE_NEWUSER}}, eperm},
		{"setns", scall{arch: native, nr: unix.SYS_SETNS}, eperm},
		{"keyctl", scall{arch: native, nr: unix.SYS_KEYCTL}, eperm},
		{"bpf", scall{arch: native, nr: unix.SYS_BPF}, eperm},
		{"io_uring_setup", scall{arch: native, nr: unix.SYS_IO_URING_SETUP}, eperm},
		{"io_uring_enter", scall{arch: native, nr: unix.SYS_IO_URING_ENTER}, eperm},
		{"io_uring_register", scall{arch: native, nr: unix.SYS_IO_URING_REGISTER}, eperm},
		{"pidfd_getfd", scall{arch: native, nr: unix.SYS_PIDFD_GETFD}, eperm},
		{"open_by_handle_at", scall{arch: native, nr: unix.SYS_OPEN_BY_HANDLE_AT}, eperm},
		{"reboot", scall{arch: native, nr: unix.SYS_REBOOT}, eperm},
		// Numbers the profile does not know: ENOSYS, so libc falls back.
		{"rseq_slice_yield (unlisted)", scall{arch: native, nr: unix.SYS_RSEQ_SLICE_YIELD}, enosys},
		{"number 1023", scall{arch: native, nr: 1023}, enosys},
		{"number 0x3fffffff", scall{arch: native, nr: 0x3fffffff}, enosys},
		// clone: no namespace flag.
		{"clone thread", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES |
			unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS}}, retAllow},
		{"clone fork", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{uint32(unix.SIGCHLD) | unix.CLONE_PIDFD}}, retAllow},
		{"clone newuser", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{unix.CLONE_NEWUSER | uint32(unix.SIGCHLD)}}, eperm},
		{"clone newns", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{unix.CLONE_NEWNS}}, eperm},
		{"clone newnet", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{unix.CLONE_NEWNET}}, eperm},
		{"clone newpid", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{unix.CLONE_NEWPID}}, eperm},
		{"clone newcgroup", scall{arch: native, nr: unix.SYS_CLONE, args: [2]uint32{unix.CLONE_NEWCGROUP}}, eperm},
		// socket: four families.
		{"socket unix", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_UNIX}}, retAllow},
		{"socket inet", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_INET}}, retAllow},
		{"socket inet6", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_INET6}}, retAllow},
		{"socket netlink", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_NETLINK}}, retAllow},
		{"socket vsock", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_VSOCK}}, retErrno(unix.EAFNOSUPPORT)},
		{"socket packet", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_PACKET}}, retErrno(unix.EAFNOSUPPORT)},
		{"socket alg", scall{arch: native, nr: unix.SYS_SOCKET, args: [2]uint32{unix.AF_ALG}}, retErrno(unix.EAFNOSUPPORT)},
		// personality: Docker's values only.
		{"personality query", scall{arch: native, nr: unix.SYS_PERSONALITY, args: [2]uint32{0xffffffff}}, retAllow},
		{"personality linux", scall{arch: native, nr: unix.SYS_PERSONALITY, args: [2]uint32{0}}, retAllow},
		{"personality no-randomize", scall{arch: native, nr: unix.SYS_PERSONALITY, args: [2]uint32{0x0040000 /* ADDR_NO_RANDOMIZE */}}, eperm},
	}
	tests = append(tests, archVerdictCases...)
	for _, tt := range tests {
		if got := verdict(t, vm, tt.c); got != tt.want {
			t.Errorf("%s: got %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

// Every number of the native table gets exactly the verdict its list says,
// and ptrace is refused on kernels that check the filter before the tracer.
func TestSeccompProfileCoversLists(t *testing.T) {
	for _, ptraceOK := range []bool{true, false} {
		p := jailProfile(ptraceOK)
		vm := jailVM(t, ptraceOK)
		for _, nr := range p.allow {
			if got := verdict(t, vm, scall{arch: nativeArch, nr: uint32(nr)}); got != retAllow {
				t.Errorf("allowed call %d: got %#x", nr, got)
			}
		}
		for _, nr := range p.refuse {
			if got := verdict(t, vm, scall{arch: nativeArch, nr: uint32(nr)}); got != retErrno(unix.EPERM) {
				t.Errorf("refused call %d: got %#x", nr, got)
			}
		}
		got := verdict(t, vm, scall{arch: nativeArch, nr: unix.SYS_PTRACE})
		if want := map[bool]uint32{true: retAllow, false: retErrno(unix.EPERM)}[ptraceOK]; got != want {
			t.Errorf("ptrace with ptraceOK=%v: got %#x, want %#x", ptraceOK, got, want)
		}
	}
}

// A profile that lists a call twice is a mistake the builder reports.
func TestSeccompProfileDuplicate(t *testing.T) {
	p := jailProfile(true)
	p.refuse = append(p.refuse, unix.SYS_READ)
	if _, err := p.program(); err == nil {
		t.Fatal("a call both allowed and refused was accepted")
	}
}

// Long left branches are jumped over: a profile allowing every other number
// (many runs) still compiles to a program whose jumps all land.
func TestSeccompSearchTreeLongJumps(t *testing.T) {
	p := profile{arch: nativeArch}
	for nr := uintptr(0); nr < 1200; nr += 2 {
		p.allow = append(p.allow, nr)
	}
	prog, err := p.program()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	for _, nr := range []uint32{0, 1, 2, 598, 599, 1198, 1199, 5000} {
		want := retErrno(unix.ENOSYS)
		if nr%2 == 0 && nr < 1200 {
			want = retAllow
		}
		if got := verdict(t, vm, scall{arch: nativeArch, nr: nr}); got != want {
			t.Errorf("nr %d: got %#x, want %#x", nr, got, want)
		}
	}
}
