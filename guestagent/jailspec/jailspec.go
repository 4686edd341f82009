// Package jailspec is the contract between the jail engine (host side,
// sandbox/jail) and the guest agent's --jail-init stage: the configuration
// the engine writes to the agent's stdin and the descriptors it hands over,
// by name. Both sides import it; it imports nothing of ours.
package jailspec

import (
	"fmt"
	"os"
)

// FD names a descriptor the engine hands to the agent.
type FD int

// The inherited descriptors. Their numbers are the contract; build the
// engine's ExtraFiles with Files, never by position in a slice.
const (
	FDListener FD = 3 + iota // the agent's listening unix socket
	FDSync                   // read end of the start pipe: one byte means "go"
	FDExe                    // the agent binary itself (exec'd through this descriptor)
	FDWork                   // optional: the work cgroup's directory (v2) or tasks file (v1)
	FDWorkBack               // v1 only: the tasks file of the agent's own pids cgroup
	fdEnd
)

// Setup are the descriptors the agent closes once the jail is set up (the
// listener stays; the work cgroup ones are kept close-on-exec).
var Setup = []FD{FDSync, FDExe}

// Files lays out named descriptors as exec.Cmd.ExtraFiles: descriptor fd is
// entry fd-3; descriptors not given are left closed in the child.
func Files(named map[FD]*os.File) []*os.File { return ExtraFiles(fdEnd, named) }

// ExtraFiles lays out named descriptors, numbered from 3 and below end, as
// exec.Cmd.ExtraFiles (entry fd-3); descriptors not given are left closed
// in the child. It panics on a number outside [3, end): a programming
// error. Every host process started with named descriptors uses it (the
// jail here, the network helper too).
func ExtraFiles[T ~int](end T, named map[T]*os.File) []*os.File {
	n := 0
	for fd := range named {
		if fd < 3 || fd >= end {
			panic(fmt.Sprintf("jailspec: descriptor %d outside [3, %d)", int(fd), int(end)))
		}
		n = max(n, int(fd)-2)
	}
	files := make([]*os.File, n)
	for fd, f := range named {
		files[fd-3] = f
	}
	return files
}

// Config is what the jail engine sends the agent's --jail-init stage on stdin.
type Config struct {
	// Root is the box's root file system, mounted by the engine before
	// the namespaces were made (and already detached on the host).
	Root       string   `json:"root"`
	Hostname   string   `json:"hostname"`
	Network    bool     `json:"network"`
	TmpSizeMiB int      `json:"tmp_size_mib"`
	Env        []string `json:"env"`
	Seccomp    bool     `json:"seccomp"`
	// Nameserver is the box's resolver (the engine's network stack), written
	// to /etc/resolv.conf when Network is set.
	Nameserver string `json:"nameserver,omitempty"`
	// WorkCgroupV2 says FDWork is a cgroup v2 directory (else v1 tasks files).
	WorkCgroupV2 bool `json:"work_cgroup_v2"`
}
