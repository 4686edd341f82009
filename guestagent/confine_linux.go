package guestagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/confinespec"
	"github.com/boxlite-ai/boxlite-mcp/internal/inroot"
)

// ConfineExec is the --confine stage: the host-side launcher of a box's
// helper processes (QEMU, the krun shim, the network helper; package
// sandbox/confine) starts this agent as root of a new user namespace that
// maps only the box's unprivileged host uid, in new mount, pid, ipc and uts
// namespaces (and a network namespace for VMMs), inside the helper's
// cgroup. The stage waits for its confinespec.Config on the start pipe,
// pivots into the root the launcher built for it
// (a read-only tmpfs holding nothing but read-only binds), applies the
// jail's process confinement (the same seccomp filter, namespace limits and
// no_new_privs as a jail box, with an empty capability bounding set) and
// executes the program. It returns only on failure, before the program runs.
func ConfineExec() error {
	// The start pipe carries the configuration; end of file without one
	// means the launcher went away before it let the program start.
	b, err := io.ReadAll(io.LimitReader(os.NewFile(confinespec.FDSync, "start"), 1<<20))
	if err != nil || len(b) == 0 {
		return fmt.Errorf("the launcher went away before the start signal (%v)", err)
	}
	var cfg confinespec.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if len(cfg.Args) == 0 {
		return errors.New("no program arguments")
	}
	if err := enterConfinedRoot(cfg); err != nil {
		return err
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	// Capabilities and no_new_privs are per thread: everything from here
	// to the exec runs on this one.
	runtime.LockOSThread()
	if cfg.Seccomp {
		if err := confineProcess(nil); err != nil {
			return fmt.Errorf("confining: %w", err)
		}
	} else {
		if err := dropBoundingCaps(nil); err != nil {
			return err
		}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("setting no_new_privs: %w", err)
		}
	}
	if err := clearInheritableCaps(); err != nil {
		return err
	}
	unix.CloseOnExec(confinespec.FDExe)
	unix.CloseOnExec(confinespec.FDStage)
	// An ELF program runs through its descriptor even with close-on-exec set.
	err = unix.Exec(inroot.FdPath(confinespec.FDExe), cfg.Args, cfg.Env)
	return fmt.Errorf("executing %s: %w", cfg.Args[0], err)
}

// enterConfinedRoot makes cfg.Root (the launcher's mount, copied into this
// mount namespace, locked read-only) this process's root, with a /proc of
// its new pid namespace, and leaves nothing of the host's tree reachable.
func enterConfinedRoot(cfg confinespec.Config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	// pivot_root refuses the locked copy: bind it onto itself (as JailInit).
	if err := unix.Mount(cfg.Root, cfg.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding the new root: %w", err)
	}
	if err := unix.Chdir(cfg.Root); err != nil {
		return err
	}
	// The launcher made proc/ and nothing in the root is ours to replace.
	if err := unix.Mount("proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	return unix.Chdir("/")
}

// clearInheritableCaps empties this thread's inheritable and ambient sets,
// so that with an empty bounding set an exec grants no capability at all
// (root of the user namespace included).
func clearInheritableCaps() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clearing inheritable capabilities: %w", err)
	}
	return nil
}
