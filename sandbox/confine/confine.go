// Package confine starts a box's host-side helper processes — the VMMs
// (QEMU, the krun shim) and the network helper — confined the way the jail
// engine confines a box, from the same code: the guest agent's --confine
// stage (package guestagent, contract in guestagent/confinespec) sets the
// confinement up and executes the program.
//
// A confined program runs as one unprivileged host uid (from its box's id
// range, never root) in its own user, mount, pid, ipc and uts namespaces,
// and a network namespace of its own unless it must reach the host's
// network (the network helper), inside a cgroup of its own with a memory
// limit, a pids limit and a CPU weight. Its root is a read-only tmpfs
// holding only what it was given: read-only binds of the host's /usr and
// /lib (its shared libraries), binds the caller lists, the device nodes it
// needs, and a /proc of its own pid namespace. It has no capability at all,
// no_new_privs, and the jail's seccomp filter. Everything it must write
// (disks, logs, sockets) is handed to it as an open descriptor, so it
// needs no writable path: a compromised VMM cannot plant a symlink for the
// server to follow.
package confine

import (
	"os"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
)

// Bind is a host path made visible to the program at the same path.
type Bind struct {
	Path     string
	Writable bool
}

// Spec describes one confined program.
type Spec struct {
	// Name names its cgroup (boxlite/<Name>): the box id and a role, e.g.
	// "<id>.vmm". Kill and Remove find leftovers by it.
	Name string
	// UID is the host uid (and gid) it runs as; never 0.
	UID uint32
	// Stage is the confine stage: a boxlite-guest binary (see StageBinary).
	Stage *os.File
	// Exe is the program; Args its argv (Args[0] its name), Env its environment.
	Exe  *os.File
	Args []string
	Env  []string
	// Binds are extra host paths it sees (the system's /usr, /lib, /lib64,
	// /bin, /sbin are always bound read-only).
	Binds []Bind
	// Devices are host device nodes it sees at the same path (e.g. /dev/kvm);
	// /dev/null, zero, full, random and urandom are always there.
	Devices []string
	// Groups are host gids it keeps as supplementary groups (e.g. the
	// owner group of /dev/kvm), mapped into its user namespace.
	Groups []uint32
	// Pass are its own descriptors: Pass[i] is descriptor confinespec.PassFD(i).
	Pass []*os.File
	// HostNetwork keeps it in the host's network namespace (the network
	// helper, which makes the box's outbound connections); else it gets an
	// empty network namespace of its own.
	HostNetwork bool
	Hostname    string
	// Stdin is its standard input (nothing when nil); Stdout and Stderr
	// receive its output (a log file), or nothing.
	Stdin          *os.File
	Stdout, Stderr *os.File
	Limits         cgroups.Limits
	// DieWithParent kills it when the thread that started it ends (tests).
	DieWithParent bool
	// NoSeccomp leaves the seccomp filter off (tests and debugging only;
	// capabilities are dropped regardless).
	NoSeccomp bool
}

// systemBinds are the host directories every confined program sees
// read-only: the dynamic loader and the shared libraries of QEMU and of
// boxlite-mcp, and QEMU's firmware in /usr/share. They hold no secrets.
var systemBinds = []string{"/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache"}

// baseDevices are the device nodes every confined program sees.
var baseDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// RootDir is the host directory the confined roots are mounted on (each in
// its own mount namespace; nothing is ever mounted there on the host).
const RootDir = "/run/boxlite/confine"

// StageBinary opens the confine stage: the boxlite-guest installed next to
// this executable (the same build as the server) where there is one, else
// fallback (an image's own guest agent, which the image build keeps at the
// server's version).
func StageBinary(fallback string) (*os.File, error) {
	if exe, err := os.Executable(); err == nil {
		if f, err := os.Open(filepath.Join(filepath.Dir(exe), "boxlite-guest")); err == nil {
			return f, nil
		}
	}
	return os.Open(fallback)
}

// UseDevice lets the program see the host device node path, keeping the
// node's owner group (e.g. kvm for /dev/kvm, usually root:kvm 0660) as a
// supplementary group. A missing node is not added.
func (s *Spec) UseDevice(path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	s.Devices = append(s.Devices, path)
	if gid, ok := fileGroup(fi); ok && gid != 0 && gid != s.UID {
		s.Groups = append(s.Groups, gid)
	}
}
