package guestagent

import "golang.org/x/sys/unix"

// archVerdictCases are the x86-64 cases of TestSeccompProfileVerdicts.
var archVerdictCases = []verdictCase{
	{"x32 unshare", scall{arch: nativeArch, nr: x32Bit | unix.SYS_UNSHARE, args: [2]uint32{unix.CLONE_NEWUSER}}, retKill},
	{"x32 read", scall{arch: nativeArch, nr: x32Bit | unix.SYS_READ}, retKill},
	{"x32 highest", scall{arch: nativeArch, nr: nrSkip - 1}, retKill},
	{"modify_ldt", scall{arch: nativeArch, nr: unix.SYS_MODIFY_LDT}, retErrno(unix.EPERM)},
	{"iopl", scall{arch: nativeArch, nr: unix.SYS_IOPL}, retErrno(unix.EPERM)},
	{"open", scall{arch: nativeArch, nr: unix.SYS_OPEN}, retAllow},
	{"fork", scall{arch: nativeArch, nr: unix.SYS_FORK}, retAllow},
}
