// Package confinespec is the contract between the host-side launcher of a
// box's helper processes (package sandbox/confine: QEMU, the krun shim, the
// network helper) and the guest agent's --confine stage, which builds their
// confinement from the same code the jail engine's --jail-init uses and
// then executes them. Both sides import it; it imports nothing of ours.
package confinespec

// The inherited descriptors, by number. Binaries come as descriptors: the
// stage runs as an unprivileged host uid that may not be able to walk the
// host paths they came from.
const (
	FDSync = 3 // read end of the start pipe: the Config, then end of file, means "go"
	FDExe  = 4 // the program to run (executed through this descriptor)
	// FDStage is the stage itself (a boxlite-guest binary): the launcher
	// executes it through this descriptor.
	FDStage = 5
	// FDFirst is the first of the program's own descriptors (Config.Pass of
	// them: disks, sockets, devices), which keep their numbers across the exec.
	FDFirst = 6
)

// Config is what the launcher writes to the start pipe (FDSync) when the
// program may start. The program's stdin is its own.
type Config struct {
	// Root is the new root the launcher built and mounted on the host
	// before the namespaces were made (a read-only tmpfs with read-only
	// binds of what the program may see, and an empty proc/), already
	// detached on the host: the stage's mount namespace has the only copy.
	Root string `json:"root"`
	// Args is the program's argv (Args[0] is its name); Env its environment.
	Args []string `json:"args"`
	Env  []string `json:"env"`
	// Pass is how many of the program's own descriptors start at FDFirst.
	Pass int `json:"pass"`
	// Hostname is set in the new uts namespace.
	Hostname string `json:"hostname,omitempty"`
	// Seccomp loads the jail's system call filter (always on outside tests).
	Seccomp bool `json:"seccomp"`
}

// PassFD is the number the program sees its i-th passed descriptor under.
func PassFD(i int) int { return FDFirst + i }
