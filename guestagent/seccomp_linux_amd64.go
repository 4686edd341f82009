package guestagent

import "golang.org/x/sys/unix"

// nativeArch is the only ABI the jail filter lets in on x86-64: the i386 ABI
// (AUDIT_ARCH_I386) is refused by the architecture check, x32 by its bit.
const nativeArch = unix.AUDIT_ARCH_X86_64

// allowArch are the x86-64 calls of Docker's default list that AArch64 does
// not have (the older forms of calls both have).
var allowArch = []uintptr{
	unix.SYS_ACCESS, unix.SYS_ALARM, unix.SYS_ARCH_PRCTL, unix.SYS_CHMOD, unix.SYS_CHOWN, unix.SYS_CREAT,
	unix.SYS_DUP2, unix.SYS_EPOLL_CREATE, unix.SYS_EPOLL_CTL_OLD, unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_WAIT_OLD,
	unix.SYS_EVENTFD, unix.SYS_FORK, unix.SYS_FUTIMESAT, unix.SYS_GETDENTS, unix.SYS_GETPGRP,
	unix.SYS_GET_THREAD_AREA, unix.SYS_INOTIFY_INIT, unix.SYS_LCHOWN, unix.SYS_LINK, unix.SYS_LSTAT,
	unix.SYS_MKDIR, unix.SYS_MKNOD, unix.SYS_OPEN, unix.SYS_PAUSE, unix.SYS_PIPE, unix.SYS_POLL,
	unix.SYS_READLINK, unix.SYS_RENAME, unix.SYS_RMDIR, unix.SYS_SELECT, unix.SYS_SET_THREAD_AREA,
	unix.SYS_SIGNALFD, unix.SYS_STAT, unix.SYS_SYMLINK, unix.SYS_TIME, unix.SYS_UNLINK, unix.SYS_URETPROBE,
	unix.SYS_UTIME, unix.SYS_UTIMES, unix.SYS_VFORK,
}

// refuseArch are refused with EPERM on x86-64 only: raw port I/O, the local
// descriptor table (Docker allows modify_ldt; no box needs 16-bit segments
// and it has a history of kernel bugs), and obsolete calls.
var refuseArch = []uintptr{
	unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_MODIFY_LDT, unix.SYS_USELIB, unix.SYS__SYSCTL, unix.SYS_USTAT,
}
