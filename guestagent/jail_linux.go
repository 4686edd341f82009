package guestagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/jailspec"
	"github.com/boxlite-ai/boxlite-mcp/internal/inroot"
	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
)

// JailConfig is what a jail engine sends the --jail-init stage on stdin.
type JailConfig = jailspec.Config

// JailInit turns the agent into a jail's first process. It runs as root of
// the box's new user namespace and PID 1 of its new pid namespace, in new
// mount, net, uts and ipc namespaces, already inside the box's cgroups. It
// reads its JailConfig from stdin, waits for the engine's start signal,
// bind-mounts the box root the engine prepared, mounts /proc, /sys, a
// minimal /dev and /tmp, pivots into the root, sets the environment and
// installs the seccomp filter. The caller then serves on jailspec.FDListener.
// Errors are for stderr (the box's console.log).
func JailInit() (*JailConfig, *WorkCgroup, error) {
	var cfg JailConfig
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		return nil, nil, fmt.Errorf("reading config: %w", err)
	}
	// Wait for the engine: it puts us in the cgroups and sets up the network first.
	var b [1]byte
	if n, _ := unix.Read(int(jailspec.FDSync), b[:]); n != 1 {
		return nil, nil, errors.New("engine went away before the start signal")
	}
	if err := enterJail(cfg); err != nil {
		return nil, nil, err
	}
	var st unix.Stat_t
	var work *WorkCgroup
	if unix.Fstat(int(jailspec.FDWork), &st) == nil {
		if cfg.WorkCgroupV2 {
			work = &WorkCgroup{Dir: os.NewFile(uintptr(jailspec.FDWork), "work-cgroup")}
		} else if unix.Fstat(int(jailspec.FDWorkBack), &st) == nil {
			work = &WorkCgroup{Tasks: os.NewFile(uintptr(jailspec.FDWork), "work-tasks"), Back: os.NewFile(uintptr(jailspec.FDWorkBack), "agent-tasks")}
		}
	}
	return &cfg, work, nil
}

func enterJail(cfg JailConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	// The copied root mount is locked (it came from a more privileged
	// namespace) and pivot_root refuses locked mounts: bind it onto itself
	// to get a mount of our own, and work relative to it from here on.
	// cfg.Root is the engine's mount point, a path the box does not control.
	if err := unix.Mount(cfg.Root, cfg.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding the box root: %w", err)
	}
	if err := unix.Chdir(cfg.Root); err != nil {
		return fmt.Errorf("entering the box root: %w", err)
	}
	// Until pivot_root the host's file system is in view, and every path
	// inside the root is the box's to plant symlinks in: everything below
	// goes through descriptors (package inroot), never a path string.
	root, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the box root: %w", err)
	}
	defer unix.Close(root)
	if err := mountSystem(root, cfg); err != nil {
		return err
	}
	if err := writeEtc(root, cfg); err != nil {
		return err
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	// pivot_root(".", ".") stacks the old root under the new one; detaching
	// it leaves nothing of the host's file system reachable.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	for _, f := range jailspec.Setup {
		unix.Close(int(f))
	}
	unix.CloseOnExec(int(jailspec.FDWork)) // never inherited by user processes
	unix.CloseOnExec(int(jailspec.FDWorkBack))
	os.Clearenv()
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	if cfg.Seccomp {
		if err := loadSeccompFilter(); err != nil {
			return fmt.Errorf("loading the seccomp filter: %w", err)
		}
	}
	return nil
}

// writeEtc writes the box's /etc/hostname and, with network, its
// /etc/resolv.conf. Each replaces whatever the box left at that name (a
// symlink included) instead of writing through it. A box whose /etc is not
// a plain directory keeps it as it is; that is its own business.
func writeEtc(root int, cfg JailConfig) error {
	etc, err := inroot.Open(root, "etc", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "boxlite jail init: /etc is not a directory (%v); not writing hostname or resolv.conf\n", err)
		return nil
	}
	defer unix.Close(etc)
	if cfg.Network && cfg.Nameserver != "" {
		if err := inroot.WriteFile(etc, "resolv.conf", netconf.ResolvConf(cfg.Nameserver), 0o644); err != nil {
			return err
		}
	}
	if cfg.Hostname != "" {
		if err := inroot.WriteFile(etc, "hostname", []byte(cfg.Hostname+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// devices are bind-mounted from the host into the box's /dev.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// sysMount is one file system mounted into the box before pivot_root.
type sysMount struct {
	src, dst, fstype string
	flags            uintptr
	data             string
	optional         bool
}

// mount mounts x onto the directory dst directly under dir, which is
// created, or replaced when the box left something else there.
func (x sysMount) mount(dir int) error {
	fd, err := inroot.EnsureDir(dir, x.dst, 0o755)
	if err != nil {
		return fmt.Errorf("mount point /%s: %w", x.dst, err)
	}
	defer unix.Close(fd)
	if err := unix.Mount(x.src, inroot.FdPath(fd), x.fstype, x.flags, x.data); err != nil && !x.optional {
		return fmt.Errorf("mounting %s on /%s: %w", x.fstype, x.dst, err)
	}
	return nil
}

// mountSystem mounts /proc, /sys, /dev and /tmp into the box root (the
// descriptor root). /dev is a fresh tmpfs, so what is created inside it is
// ours alone.
func mountSystem(root int, cfg JailConfig) error {
	tmpSize := cfg.TmpSizeMiB
	if tmpSize <= 0 {
		tmpSize = 256
	}
	for _, x := range []sysMount{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, "", true},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=64k", false},
		{"tmpfs", "tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, fmt.Sprintf("mode=1777,size=%dm", tmpSize), false},
	} {
		if err := x.mount(root); err != nil {
			return err
		}
	}
	dev, err := inroot.Open(root, "dev", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("opening the new /dev: %w", err)
	}
	defer unix.Close(dev)
	for _, d := range devices {
		fd, err := inroot.EnsureFile(dev, d, 0o666)
		if err != nil {
			return fmt.Errorf("/dev/%s: %w", d, err)
		}
		err = unix.Mount("/dev/"+d, inroot.FdPath(fd), "", unix.MS_BIND, "")
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("binding /dev/%s: %w", d, err)
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := unix.Symlinkat(target, dev, link); err != nil {
			return fmt.Errorf("/dev/%s: %w", link, err)
		}
	}
	for _, x := range []sysMount{
		{"devpts", "pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", true},
		{"tmpfs", "shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777,size=64m", false},
		{"mqueue", "mqueue", "mqueue", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	} {
		if err := x.mount(dev); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo in the box's network namespace.
func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var req [unix.IFNAMSIZ + 24]byte
	copy(req[:], "lo")
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return e
	}
	flags := *(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ]))
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = flags | unix.IFF_UP
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), unix.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return e
	}
	return nil
}
