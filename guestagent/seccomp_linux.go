package guestagent

import (
	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// deniedSyscalls are refused with EPERM inside a jail: they reach kernel
// surfaces a sandbox has no business with (modules, kexec, bpf, perf,
// keyrings, mounts and namespaces after setup, clocks, swap, raw I/O ports,
// handle-based file access that can escape a mount namespace).
var deniedSyscalls = []string{
	"init_module", "finit_module", "delete_module",
	"kexec_load", "kexec_file_load",
	"bpf", "perf_event_open", "userfaultfd",
	"keyctl", "add_key", "request_key",
	"mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
	"unshare", "setns",
	"swapon", "swapoff", "acct", "quotactl", "syslog",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"iopl", "ioperm", "lookup_dcookie",
	"open_by_handle_at", "name_to_handle_at",
	"process_vm_readv", "process_vm_writev",
	"kcmp", "vhangup",
}

// seccompFilter is the jail's filter: allow by default, deny the list above,
// and allow ptrace only as PTRACE_TRACEME (a child asking to be traced by its
// parent), so no process can attach to one that is not its child.
func seccompFilter() seccomp.Filter {
	deny := seccomp.ActionErrno | seccomp.Action(unix.EPERM)
	return seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionAllow,
			Syscalls: []seccomp.SyscallGroup{
				{Action: deny, Names: deniedSyscalls},
				{Action: deny, NamesWithCondtions: []seccomp.NameWithConditions{{
					Name:       "ptrace",
					Conditions: []seccomp.Condition{{Argument: 0, Operation: seccomp.NotEqual, Value: unix.PTRACE_TRACEME}},
				}}},
				// clone3 cannot be filtered by its flags (they sit behind a
				// pointer); ENOSYS makes libc fall back to clone.
				{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
				// clone with CLONE_NEWUSER (and other new namespaces) is refused.
				{Action: deny, NamesWithCondtions: []seccomp.NameWithConditions{{
					Name:       "clone",
					Conditions: []seccomp.Condition{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_NEWUSER}},
				}, {
					Name:       "clone",
					Conditions: []seccomp.Condition{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_NEWNS}},
				}}},
			},
		},
	}
}
