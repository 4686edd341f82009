//go:build amd64 || arm64

// Jail confinement: the seccomp profile of jail boxes and the process-level
// protections it relies on. loadSeccompFilter applies all of it as the last
// step of the jail's start-up (enterJail), after which the agent serves.
//
// The filter is an allowlist modelled on Docker's default profile
// (moby/profiles seccomp/default.json) for a container without
// CAP_SYS_ADMIN, evaluated in this order for every system call of the
// agent and of everything it runs (it is inherited and cannot be removed):
//
//  1. The ABI. seccomp_data.arch must be the native one (x86-64 on amd64,
//     AArch64 on arm64); anything else (the i386 ABI through int 0x80 or
//     sysenter, 32-bit ARM on arm64) kills the process (SECCOMP_RET_KILL_PROCESS).
//     On x86-64 a number with the x32 bit set (0x40000000) is killed too.
//     A foreign ABI is refused outright, not per call: its numbers mean other
//     calls, and no box needs 32-bit programs. Killing, not an errno,
//     because a 32-bit program that sees every call fail (even exit) spins
//     or crashes in confusing ways; SIGSYS ("Bad system call") says at once
//     what happened. Number -1 (a tracer skipping a call) is allowed: the
//     kernel runs nothing for it.
//  2. Allowed: what a normal userland needs (bash, coreutils, python3,
//     node, apt/dpkg, gcc): Docker's default list. Allowed with argument
//     checks on the low 32 bits (the kernel ignores the rest):
//     clone without any CLONE_NEW* flag (else EPERM); socket for AF_UNIX,
//     AF_INET, AF_INET6 and AF_NETLINK only (else EAFNOSUPPORT, as on a
//     kernel without that family: AF_VSOCK would reach the host's VMs and
//     other boxes' agents, AF_PACKET/AF_ALG and the rarer families are
//     kernel attack surface no box needs); personality only for the values
//     Docker allows (query, PER_LINUX, PER_LINUX32, UNAME26). ptrace and
//     process_vm_readv/writev are allowed on kernels >= 4.8 (as Docker:
//     before 4.8 a tracer could change a call after the filter ran), so
//     gdb and strace work on a box's own processes.
//     clone3 is allowed although its flags sit behind a pointer: the agent
//     itself needs it (CLONE_INTO_CGROUP starts user processes in the work
//     cgroup on cgroup v2), and new namespaces are refused by the kernel
//     instead (see below), for clone3, clone and unshare alike.
//  3. Refused with EPERM ("known but refused"): mounts and the new mount
//     API, unshare/setns, keyrings, modules, kexec, reboot, swap, acct,
//     quotas, syslog, bpf, perf_event_open, userfaultfd, fanotify_init,
//     setting clocks, file handles (open_by_handle_at, name_to_handle_at),
//     kcmp/pidfd_getfd/process_madvise, io_uring (as Docker and gVisor:
//     a large share of recent kernel exploits), sethostname/setdomainname,
//     vhangup, NUMA policy, the LSM calls, listns, and on x86-64 iopl,
//     ioperm, modify_ldt, uselib and _sysctl.
//  4. Any other number returns ENOSYS, so that libc and runtimes fall back
//     from a call the profile does not know (newer than it) to an older one.
//
// Process-level protections applied with the filter, because the filter
// alone cannot give them:
//
//   - The box's namespace limits (/proc/sys/user/max_*_namespaces of its
//     user namespace) are set to 0: no process can create a namespace by
//     any call, including clone3.
//   - The capability bounding set of every agent thread is cut to Docker's
//     default set (chown, dac_override, fowner, fsetid, kill, setgid,
//     setuid, setpcap, setfcap, net_bind_service, net_raw, sys_chroot,
//     mknod, audit_write): every program the agent runs, root in the box
//     included, gets at most these. Without CAP_SYS_RESOURCE the namespace
//     limits cannot be raised again; without CAP_SYS_PTRACE nothing can
//     trace the agent (next point); without CAP_NET_ADMIN and CAP_SYS_ADMIN
//     the box's own network namespace (netfilter) and the rest of the
//     capability-gated kernel surface are closed as in Docker.
//   - The agent (PID 1 of the box) makes itself non-dumpable. The kernel
//     then allows ptrace, /proc/1/mem, /proc/1/fd, process_vm_* and the
//     like on it only to a process with CAP_SYS_PTRACE in the box's user
//     namespace, which no process the agent runs has. (Yama is not relied
//     on: it is a host setting, often absent.)
//   - no_new_privs is set, so setuid and file-capability programs gain
//     nothing.

package guestagent

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Offsets in struct seccomp_data. Arguments are 64-bit; on the little-endian
// architectures this file builds for, the low half comes first.
const (
	offNr      = 0
	offArch    = 4
	offArgs    = 16
	x32Bit     = 0x40000000 // __X32_SYSCALL_BIT; x/sys has no constant for it
	nrSkip     = 0xffffffff // syscall -1: a tracer cancelled the call
	maxBPFInsn = 4096       // BPF_MAXINSNS
	perLinux32 = 0x0008     // personality PER_LINUX32; x/sys has no constant
	uname26    = 0x0020000  // personality UNAME26; likewise
)

// Actions. The errno sits in the low 16 bits of SECCOMP_RET_ERRNO.
const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

func retErrno(e unix.Errno) uint32 {
	return unix.SECCOMP_RET_ERRNO | uint32(e)&unix.SECCOMP_RET_DATA
}

// namespaceFlags are the clone flags that create a namespace.
// CLONE_NEWTIME shares its bit with CSIGNAL in clone(2) and exists only for
// clone3 and unshare, which the namespace limits cover.
const namespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// argRule allows a call by its first argument's low 32 bits: when it has no
// bit of mask set (mask != 0), or when it is one of values; otherwise the
// call returns deny.
type argRule struct {
	mask   uint32
	values []uint32
	deny   uint32
}

// profile is a filter for one native architecture.
type profile struct {
	arch   uint32 // AUDIT_ARCH_* of the native ABI
	x32    bool   // refuse numbers with the x32 bit (x86-64)
	allow  []uintptr
	refuse []uintptr
	args   map[uintptr]argRule
}

// jailProfile is the profile of jail boxes on this architecture. ptraceOK
// says whether the kernel rechecks the filter after a tracer changed a call
// (Linux >= 4.8).
func jailProfile(ptraceOK bool) profile {
	p := profile{
		arch:   nativeArch,
		x32:    runtime.GOARCH == "amd64",
		allow:  slices.Concat(allowCommon, allowArch),
		refuse: slices.Concat(refuseCommon, refuseArch),
		args: map[uintptr]argRule{
			unix.SYS_CLONE: {mask: namespaceFlags, deny: retErrno(unix.EPERM)},
			unix.SYS_SOCKET: {values: []uint32{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK},
				deny: retErrno(unix.EAFNOSUPPORT)},
			// Docker's values: PER_LINUX, PER_LINUX32, UNAME26, both, and the query 0xffffffff.
			unix.SYS_PERSONALITY: {values: []uint32{0, perLinux32, uname26, uname26 | perLinux32, 0xffffffff},
				deny: retErrno(unix.EPERM)},
		},
	}
	tracing := []uintptr{unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV}
	if ptraceOK {
		p.allow = append(p.allow, tracing...)
	} else {
		p.refuse = append(p.refuse, tracing...)
	}
	return p
}

// allowCommon are allowed unconditionally on every architecture (Docker's
// default list, 64-bit names), plus chroot (Docker allows it with
// CAP_SYS_CHROOT, a default capability) and clone3 (see the file comment).
var allowCommon = []uintptr{
	unix.SYS_ACCEPT, unix.SYS_ACCEPT4, unix.SYS_ADJTIMEX, unix.SYS_BIND, unix.SYS_BRK, unix.SYS_CACHESTAT,
	unix.SYS_CAPGET, unix.SYS_CAPSET, unix.SYS_CHDIR, unix.SYS_CHROOT, unix.SYS_CLOCK_ADJTIME,
	unix.SYS_CLOCK_GETRES, unix.SYS_CLOCK_GETTIME, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_CLONE3, unix.SYS_CLOSE,
	unix.SYS_CLOSE_RANGE, unix.SYS_CONNECT, unix.SYS_COPY_FILE_RANGE, unix.SYS_DUP, unix.SYS_DUP3,
	unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2, unix.SYS_EVENTFD2,
	unix.SYS_EXECVE, unix.SYS_EXECVEAT, unix.SYS_EXIT, unix.SYS_EXIT_GROUP, unix.SYS_FACCESSAT,
	unix.SYS_FACCESSAT2, unix.SYS_FADVISE64, unix.SYS_FALLOCATE, unix.SYS_FANOTIFY_MARK, unix.SYS_FCHDIR,
	unix.SYS_FCHMOD, unix.SYS_FCHMODAT, unix.SYS_FCHMODAT2, unix.SYS_FCHOWN, unix.SYS_FCHOWNAT, unix.SYS_FCNTL,
	unix.SYS_FDATASYNC, unix.SYS_FGETXATTR, unix.SYS_FLISTXATTR, unix.SYS_FLOCK, unix.SYS_FREMOVEXATTR,
	unix.SYS_FSETXATTR, unix.SYS_FSTAT, unix.SYS_FSTATFS, unix.SYS_FSYNC, unix.SYS_FTRUNCATE, unix.SYS_FUTEX,
	unix.SYS_FUTEX_REQUEUE, unix.SYS_FUTEX_WAIT, unix.SYS_FUTEX_WAITV, unix.SYS_FUTEX_WAKE, unix.SYS_GETCPU,
	unix.SYS_GETCWD, unix.SYS_GETDENTS64, unix.SYS_GETEGID, unix.SYS_GETEUID, unix.SYS_GETGID,
	unix.SYS_GETGROUPS, unix.SYS_GETITIMER, unix.SYS_GETPEERNAME, unix.SYS_GETPGID, unix.SYS_GETPID,
	unix.SYS_GETPPID, unix.SYS_GETPRIORITY, unix.SYS_GETRANDOM, unix.SYS_GETRESGID, unix.SYS_GETRESUID,
	unix.SYS_GETRLIMIT, unix.SYS_GET_ROBUST_LIST, unix.SYS_GETRUSAGE, unix.SYS_GETSID, unix.SYS_GETSOCKNAME,
	unix.SYS_GETSOCKOPT, unix.SYS_GETTID, unix.SYS_GETTIMEOFDAY, unix.SYS_GETUID, unix.SYS_GETXATTR,
	unix.SYS_GETXATTRAT, unix.SYS_INOTIFY_ADD_WATCH, unix.SYS_INOTIFY_INIT1, unix.SYS_INOTIFY_RM_WATCH,
	unix.SYS_IO_CANCEL, unix.SYS_IOCTL, unix.SYS_IO_DESTROY, unix.SYS_IO_GETEVENTS, unix.SYS_IO_PGETEVENTS,
	unix.SYS_IOPRIO_GET, unix.SYS_IOPRIO_SET, unix.SYS_IO_SETUP, unix.SYS_IO_SUBMIT, unix.SYS_KILL,
	unix.SYS_LANDLOCK_ADD_RULE, unix.SYS_LANDLOCK_CREATE_RULESET, unix.SYS_LANDLOCK_RESTRICT_SELF,
	unix.SYS_LGETXATTR, unix.SYS_LINKAT, unix.SYS_LISTEN, unix.SYS_LISTMOUNT, unix.SYS_LISTXATTR,
	unix.SYS_LISTXATTRAT, unix.SYS_LLISTXATTR, unix.SYS_LREMOVEXATTR, unix.SYS_LSEEK, unix.SYS_LSETXATTR,
	unix.SYS_MADVISE, unix.SYS_MAP_SHADOW_STACK, unix.SYS_MEMBARRIER, unix.SYS_MEMFD_CREATE,
	unix.SYS_MEMFD_SECRET, unix.SYS_MINCORE, unix.SYS_MKDIRAT, unix.SYS_MKNODAT, unix.SYS_MLOCK, unix.SYS_MLOCK2,
	unix.SYS_MLOCKALL, unix.SYS_MMAP, unix.SYS_MPROTECT, unix.SYS_MQ_GETSETATTR, unix.SYS_MQ_NOTIFY,
	unix.SYS_MQ_OPEN, unix.SYS_MQ_TIMEDRECEIVE, unix.SYS_MQ_TIMEDSEND, unix.SYS_MQ_UNLINK, unix.SYS_MREMAP,
	unix.SYS_MSEAL, unix.SYS_MSGCTL, unix.SYS_MSGGET, unix.SYS_MSGRCV, unix.SYS_MSGSND, unix.SYS_MSYNC,
	unix.SYS_MUNLOCK, unix.SYS_MUNLOCKALL, unix.SYS_MUNMAP, unix.SYS_NANOSLEEP, unix.SYS_NEWFSTATAT,
	unix.SYS_OPENAT, unix.SYS_OPENAT2, unix.SYS_PIDFD_OPEN, unix.SYS_PIDFD_SEND_SIGNAL, unix.SYS_PIPE2,
	unix.SYS_PKEY_ALLOC, unix.SYS_PKEY_FREE, unix.SYS_PKEY_MPROTECT, unix.SYS_PPOLL, unix.SYS_PRCTL,
	unix.SYS_PREAD64, unix.SYS_PREADV, unix.SYS_PREADV2, unix.SYS_PRLIMIT64, unix.SYS_PROCESS_MRELEASE,
	unix.SYS_PSELECT6, unix.SYS_PWRITE64, unix.SYS_PWRITEV, unix.SYS_PWRITEV2, unix.SYS_READ,
	unix.SYS_READAHEAD, unix.SYS_READLINKAT, unix.SYS_READV, unix.SYS_RECVFROM, unix.SYS_RECVMMSG,
	unix.SYS_RECVMSG, unix.SYS_REMAP_FILE_PAGES, unix.SYS_REMOVEXATTR, unix.SYS_REMOVEXATTRAT,
	unix.SYS_RENAMEAT, unix.SYS_RENAMEAT2, unix.SYS_RESTART_SYSCALL, unix.SYS_RSEQ, unix.SYS_RT_SIGACTION,
	unix.SYS_RT_SIGPENDING, unix.SYS_RT_SIGPROCMASK, unix.SYS_RT_SIGQUEUEINFO, unix.SYS_RT_SIGRETURN,
	unix.SYS_RT_SIGSUSPEND, unix.SYS_RT_SIGTIMEDWAIT, unix.SYS_RT_TGSIGQUEUEINFO, unix.SYS_SCHED_GETAFFINITY,
	unix.SYS_SCHED_GETATTR, unix.SYS_SCHED_GETPARAM, unix.SYS_SCHED_GET_PRIORITY_MAX,
	unix.SYS_SCHED_GET_PRIORITY_MIN, unix.SYS_SCHED_GETSCHEDULER, unix.SYS_SCHED_RR_GET_INTERVAL,
	unix.SYS_SCHED_SETAFFINITY, unix.SYS_SCHED_SETATTR, unix.SYS_SCHED_SETPARAM, unix.SYS_SCHED_SETSCHEDULER,
	unix.SYS_SCHED_YIELD, unix.SYS_SECCOMP, unix.SYS_SEMCTL, unix.SYS_SEMGET, unix.SYS_SEMOP,
	unix.SYS_SEMTIMEDOP, unix.SYS_SENDFILE, unix.SYS_SENDMMSG, unix.SYS_SENDMSG, unix.SYS_SENDTO,
	unix.SYS_SETFSGID, unix.SYS_SETFSUID, unix.SYS_SETGID, unix.SYS_SETGROUPS, unix.SYS_SETITIMER,
	unix.SYS_SETPGID, unix.SYS_SETPRIORITY, unix.SYS_SETREGID, unix.SYS_SETRESGID, unix.SYS_SETRESUID,
	unix.SYS_SETREUID, unix.SYS_SETRLIMIT, unix.SYS_SET_ROBUST_LIST, unix.SYS_SETSID, unix.SYS_SETSOCKOPT,
	unix.SYS_SET_TID_ADDRESS, unix.SYS_SETUID, unix.SYS_SETXATTR, unix.SYS_SETXATTRAT, unix.SYS_SHMAT,
	unix.SYS_SHMCTL, unix.SYS_SHMDT, unix.SYS_SHMGET, unix.SYS_SHUTDOWN, unix.SYS_SIGALTSTACK,
	unix.SYS_SIGNALFD4, unix.SYS_SOCKETPAIR, unix.SYS_SPLICE, unix.SYS_STATFS, unix.SYS_STATMOUNT,
	unix.SYS_STATX, unix.SYS_SYMLINKAT, unix.SYS_SYNC, unix.SYS_SYNC_FILE_RANGE, unix.SYS_SYNCFS,
	unix.SYS_SYSINFO, unix.SYS_TEE, unix.SYS_TGKILL, unix.SYS_TIMER_CREATE, unix.SYS_TIMER_DELETE,
	unix.SYS_TIMER_GETOVERRUN, unix.SYS_TIMER_GETTIME, unix.SYS_TIMER_SETTIME, unix.SYS_TIMERFD_CREATE,
	unix.SYS_TIMERFD_GETTIME, unix.SYS_TIMERFD_SETTIME, unix.SYS_TIMES, unix.SYS_TKILL, unix.SYS_TRUNCATE,
	unix.SYS_UMASK, unix.SYS_UNAME, unix.SYS_UNLINKAT, unix.SYS_UTIMENSAT, unix.SYS_VMSPLICE, unix.SYS_WAIT4,
	unix.SYS_WAITID, unix.SYS_WRITE, unix.SYS_WRITEV,
}

// refuseCommon are refused with EPERM on every architecture.
var refuseCommon = []uintptr{
	// Mounts and namespaces.
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_MOVE_MOUNT, unix.SYS_OPEN_TREE,
	unix.SYS_OPEN_TREE_ATTR, unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
	unix.SYS_MOUNT_SETATTR, unix.SYS_UNSHARE, unix.SYS_SETNS, unix.SYS_LISTNS,
	// Keyrings (not namespaced).
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	// The kernel and the machine.
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE, unix.SYS_KEXEC_LOAD,
	unix.SYS_KEXEC_FILE_LOAD, unix.SYS_REBOOT, unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_ACCT,
	unix.SYS_QUOTACTL, unix.SYS_QUOTACTL_FD, unix.SYS_SYSLOG, unix.SYS_LOOKUP_DCOOKIE, unix.SYS_NFSSERVCTL,
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME,
	unix.SYS_VHANGUP, unix.SYS_LSM_GET_SELF_ATTR, unix.SYS_LSM_SET_SELF_ATTR, unix.SYS_LSM_LIST_MODULES,
	// Kernel attack surface a box has no use for.
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD, unix.SYS_FANOTIFY_INIT,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_MBIND, unix.SYS_SET_MEMPOLICY, unix.SYS_GET_MEMPOLICY, unix.SYS_SET_MEMPOLICY_HOME_NODE,
	unix.SYS_MIGRATE_PAGES, unix.SYS_MOVE_PAGES,
	// Other processes and files by handle (Docker: CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
	unix.SYS_KCMP, unix.SYS_PIDFD_GETFD, unix.SYS_PROCESS_MADVISE, unix.SYS_OPEN_BY_HANDLE_AT,
	unix.SYS_NAME_TO_HANDLE_AT,
}

// program compiles the profile to classic BPF: the ABI checks, then a
// binary search over the call number whose leaves return an action or
// check an argument. Only numbers and the architecture are loaded before a
// leaf, so the kernel can cache the verdict of every unconditionally
// allowed call and skip the filter for it.
func (p profile) program() ([]bpf.Instruction, error) {
	rules := map[uint32]leaf{}
	add := func(nrs []uintptr, l leaf) error {
		for _, nr := range nrs {
			if _, dup := rules[uint32(nr)]; dup {
				return fmt.Errorf("seccomp profile: call %d listed twice", nr)
			}
			rules[uint32(nr)] = l
		}
		return nil
	}
	if err := add(p.allow, leaf{ret: retAllow}); err != nil {
		return nil, err
	}
	if err := add(p.refuse, leaf{ret: retErrno(unix.EPERM)}); err != nil {
		return nil, err
	}
	for nr, r := range p.args {
		if err := add([]uintptr{nr}, leaf{arg: &r}); err != nil {
			return nil, err
		}
	}
	top := uint32(nrSkip) // exclusive end of the searched range
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: p.arch, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: nrSkip, SkipTrue: 1},
		bpf.RetConstant{Val: retAllow},
	}
	if p.x32 {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipFalse: 1},
			bpf.RetConstant{Val: retKill})
		top = x32Bit
	}
	prog = append(prog, searchTree(segments(rules, top))...)
	if len(prog) > maxBPFInsn {
		return nil, fmt.Errorf("seccomp profile: %d instructions, the kernel takes %d", len(prog), maxBPFInsn)
	}
	return prog, nil
}

// leaf is what happens to one call number: a fixed action, or an argument check.
type leaf struct {
	ret uint32
	arg *argRule
}

func (l leaf) instructions() []bpf.Instruction {
	if l.arg == nil {
		return []bpf.Instruction{bpf.RetConstant{Val: l.ret}}
	}
	r := l.arg
	ins := []bpf.Instruction{bpf.LoadAbsolute{Off: offArgs, Size: 4}}
	if r.mask != 0 {
		return append(ins,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: r.mask, SkipFalse: 1},
			bpf.RetConstant{Val: r.deny},
			bpf.RetConstant{Val: retAllow})
	}
	for i, v := range r.values {
		ins = append(ins, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipTrue: uint8(len(r.values) - i)})
	}
	return append(ins, bpf.RetConstant{Val: r.deny}, bpf.RetConstant{Val: retAllow})
}

// segment is a run of call numbers [start, next segment's start) with one leaf.
type segment struct {
	start uint32
	leaf  leaf
}

// segments splits [0, top) into runs of equal fixed actions; numbers the
// profile does not list return ENOSYS. Argument checks get a run each.
func segments(rules map[uint32]leaf, top uint32) []segment {
	nrs := make([]uint32, 0, len(rules))
	for nr := range rules {
		nrs = append(nrs, nr)
	}
	slices.Sort(nrs)
	unknown := leaf{ret: retErrno(unix.ENOSYS)}
	var segs []segment
	push := func(start uint32, l leaf) {
		if n := len(segs); n > 0 && l.arg == nil && segs[n-1].leaf.arg == nil && segs[n-1].leaf.ret == l.ret {
			return // extends the previous run
		}
		segs = append(segs, segment{start, l})
	}
	next := uint32(0)
	for _, nr := range nrs {
		if nr >= top {
			continue
		}
		if nr > next {
			push(next, unknown)
		}
		push(nr, rules[nr])
		next = nr + 1
	}
	if next < top {
		push(next, unknown)
	}
	return segs
}

// searchTree emits a binary search over segs (sorted, covering the numbers
// that reach it). Conditional jumps reach 255 instructions; a longer left
// branch is jumped over with an unconditional jump.
func searchTree(segs []segment) []bpf.Instruction {
	if len(segs) == 1 {
		return segs[0].leaf.instructions()
	}
	mid := len(segs) / 2
	left, right := searchTree(segs[:mid]), searchTree(segs[mid:])
	k := segs[mid].start
	if len(left) <= 255 {
		return slices.Concat([]bpf.Instruction{bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: k, SkipTrue: uint8(len(left))}}, left, right)
	}
	return slices.Concat([]bpf.Instruction{
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: k, SkipFalse: 1},
		bpf.Jump{Skip: uint32(len(left))},
	}, left, right)
}

// keptCaps is the bounding set left to the programs the agent runs: Docker's
// default capability set.
var keptCaps = []int{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER, unix.CAP_MKNOD, unix.CAP_NET_RAW,
	unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE,
	unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
}

// namespaceLimits are the per-user-namespace limits set to 0 in the box.
var namespaceLimits = []string{"user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time"}

// loadSeccompFilter confines the calling process (the jail's agent) and
// everything it will run, as the file comment describes: namespace limits
// to 0, the capability bounding set cut to keptCaps on every thread, the
// agent non-dumpable, no_new_privs, and the filter on every thread. It must
// run as root of the box's user namespace, in a binary without cgo (the
// bounding set is per thread), before the agent runs anything. Any failure
// is an error: the jail must not start half-confined.
func loadSeccompFilter() error { return confineProcess(keptCaps) }

// confineProcess applies loadSeccompFilter's protections keeping only the
// capabilities keep in the bounding set (none: every program run from here
// on has no capability at all, whatever its uid).
func confineProcess(keep []int) error {
	prog, err := jailProfile(kernelAtLeast(4, 8)).program()
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("assembling the seccomp filter: %w", err)
	}
	for _, name := range namespaceLimits {
		err := os.WriteFile("/proc/sys/user/max_"+name+"_namespaces", []byte("0\n"), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // time namespaces are Linux >= 5.6
			return fmt.Errorf("limiting %s namespaces: %w", name, err)
		}
	}
	if err := dropBoundingCaps(keep); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the agent non-dumpable: %w", err)
	}
	return installFilter(raw)
}

// dropBoundingCaps removes every capability but keep from the bounding set
// of all the process's threads.
func dropBoundingCaps(keep []int) error {
	for c := 0; c <= 63; c++ {
		if slices.Contains(keep, c) {
			continue
		}
		_, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0)
		switch {
		case e == unix.EINVAL: // past the kernel's last capability
			return nil
		case e == unix.ENOTSUP:
			return errors.New("dropping capabilities needs a binary built without cgo")
		case e != 0:
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, e)
		}
	}
	return nil
}

// installFilter sets no_new_privs and installs prog on every thread.
func installFilter(raw []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// no_new_privs is per thread: set it on the thread that installs the
	// filter; TSYNC copies it to the others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", err)
	}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filter)
	if e != 0 {
		return fmt.Errorf("installing the seccomp filter: %w", e)
	}
	if r != 0 {
		return fmt.Errorf("installing the seccomp filter: thread %d could not be synchronized", r)
	}
	return nil
}

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, _ := strconv.Atoi(parts[0])
	mnr, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return maj > major || maj == major && mnr >= minor
}
