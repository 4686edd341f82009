package guestagent

import "golang.org/x/sys/unix"

// archVerdictCases are the AArch64 cases of TestSeccompProfileVerdicts.
var archVerdictCases = []verdictCase{
	{"arm compat unshare", scall{arch: unix.AUDIT_ARCH_ARM, nr: unix.SYS_UNSHARE}, retKill},
	{"large number", scall{arch: nativeArch, nr: 0x40000000 | unix.SYS_READ}, retErrno(unix.ENOSYS)},
}
