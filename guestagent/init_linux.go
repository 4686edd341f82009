package guestagent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
)

// ErrNoRoot means Init could not mount and enter the root device.
var ErrNoRoot = errors.New("no root file system")

// InitConfig says what the agent does as a box's first process.
type InitConfig struct {
	// Modules are kernel module files loaded in this order (finit_module).
	Modules []string
	// RootDevice, when set, is mounted (RootFSType, default ext4) and
	// becomes the root; the agent continues inside it.
	RootDevice string
	RootFSType string
	// Hostname is set when non-empty.
	Hostname string
	// SkipDevtmpfs leaves /dev alone (a jail provides its own nodes).
	SkipDevtmpfs bool
	// NoMounts skips every mount: the box's creator did them (a jail,
	// whose seccomp filter then forbids mount).
	NoMounts bool
	// WorkPidsMax, when > 0, makes a cgroup (v2) for user processes limited
	// to this many tasks, so a fork bomb cannot starve the agent; Init
	// returns it for Config.Work.
	WorkPidsMax int
}

// mountSpec is one mount the init performs if the target is not mounted yet.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func baseMounts(devtmpfs bool) []mountSpec {
	var m []mountSpec
	m = append(m, mountSpec{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""})
	m = append(m, mountSpec{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""})
	if devtmpfs {
		m = append(m, mountSpec{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"})
	}
	return append(m,
		mountSpec{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
		mountSpec{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		mountSpec{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	)
}

// Init performs the first-process duties. Each step is attempted; failures
// are logged and joined into the returned error, so a box with, say, no
// sysfs still serves calls.
func Init(cfg InitConfig, log *slog.Logger) (work *WorkCgroup, err error) {
	var errs []error
	if len(cfg.Modules) > 0 {
		// Module parameters come from the kernel command line (QEMU's
		// microvm passes its virtio_mmio.device= entries there), which is
		// read from /proc: nothing else reads it for modules we load ourselves.
		mountAll(baseMounts(false)[:1], log)
		params := moduleParams()
		for _, mod := range cfg.Modules {
			name := strings.TrimSuffix(filepath.Base(mod), ".ko")
			if err := loadModule(mod, params[strings.ReplaceAll(name, "-", "_")]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if cfg.RootDevice != "" {
		// The initramfs needs /dev to find the device.
		mountAll(baseMounts(!cfg.SkipDevtmpfs)[2:3], log)
		if err := switchRoot(cfg.RootDevice, cfg.RootFSType); err != nil {
			return nil, errors.Join(append(errs, fmt.Errorf("%w: %v", ErrNoRoot, err))...)
		}
		// The box's disk (disk_mib) may be larger than the image's file
		// system: grow it to the disk on first boot.
		if grown, err := GrowRoot(cfg.RootDevice, "/"); err != nil {
			errs = append(errs, fmt.Errorf("growing the root file system: %w", err))
		} else if grown {
			log.Info("root file system grown to the disk", "device", cfg.RootDevice)
		}
	}
	if !cfg.NoMounts {
		errs = append(errs, mountAll(baseMounts(!cfg.SkipDevtmpfs), log)...)
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			errs = append(errs, fmt.Errorf("sethostname: %w", err))
		}
	}
	if err := StartReaper(); err != nil {
		errs = append(errs, err)
	}
	if cfg.WorkPidsMax > 0 {
		if dir, err := workCgroupV2(cfg.WorkPidsMax); err != nil {
			errs = append(errs, err)
		} else {
			work = &WorkCgroup{Dir: dir}
		}
	}
	for _, err := range errs {
		log.Warn("init step failed", "err", err)
	}
	return work, errors.Join(errs...)
}

// workCgroupV2 mounts cgroup2 and makes /sys/fs/cgroup/work with pids.max.
func workCgroupV2(pidsMax int) (*os.File, error) {
	const root = "/sys/fs/cgroup"
	os.MkdirAll(root, 0o755)
	if err := unix.Mount("cgroup2", root, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("mount cgroup2: %w", err)
	}
	if err := os.WriteFile(root+"/cgroup.subtree_control", []byte("+pids"), 0o644); err != nil {
		return nil, fmt.Errorf("enable pids controller: %w", err)
	}
	// The agent (in the root cgroup) also wins the CPU against a busy box:
	// a tiny weight for the work group keeps it answering. Best effort.
	cpu := os.WriteFile(root+"/cgroup.subtree_control", []byte("+cpu"), 0o644) == nil
	work := root + "/work"
	if err := os.Mkdir(work, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if err := os.WriteFile(work+"/pids.max", []byte(fmt.Sprint(pidsMax)), 0o644); err != nil {
		return nil, err
	}
	if cpu {
		os.WriteFile(work+"/cpu.weight", []byte("1"), 0o644)
	}
	return os.Open(work)
}

func mountAll(specs []mountSpec, log *slog.Logger) []error {
	var errs []error
	for _, m := range specs {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.target, err))
			continue
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if errors.Is(err, unix.EBUSY) {
			continue // already mounted
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
			continue
		}
		log.Debug("mounted", "fstype", m.fstype, "target", m.target)
	}
	return errs
}

// loadModule loads one kernel module file. An already loaded module is fine.
func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// moduleParams collects "module.param=value" entries of the kernel command
// line into "param=value ..." strings per module name.
func moduleParams() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	out := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		key, val, ok := strings.Cut(f, "=")
		mod, param, dotted := strings.Cut(key, ".")
		if !ok || !dotted {
			continue
		}
		mod = strings.ReplaceAll(mod, "-", "_")
		if out[mod] != "" {
			out[mod] += " "
		}
		out[mod] += param + "=" + val
	}
	return out
}

// switchRoot mounts dev (waiting briefly for it to appear) and makes it the
// root, moving /dev along.
func switchRoot(dev, fstype string) error {
	if fstype == "" {
		fstype = "ext4"
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(dev); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("root device %s did not appear", dev)
		}
		time.Sleep(20 * time.Millisecond)
	}
	const newRoot = "/newroot"
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, newRoot, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount root %s (%s): %w", dev, fstype, err)
	}
	for _, d := range []string{"/dev", "/proc"} {
		os.MkdirAll(newRoot+d, 0o755)
		if err := unix.Mount(d, newRoot+d, "", unix.MS_MOVE, ""); err != nil && d == "/dev" {
			return fmt.Errorf("move %s: %w", d, err)
		}
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return os.Chdir("/")
}

// PowerOff syncs the disks and ends the box. Outside PID 1 it just exits:
// ending a jail's first process ends the jail. As PID 1 it restarts the
// machine, which ends it: the VM engines run QEMU with -no-reboot (a
// microvm without ACPI would only halt on power-off, leaving QEMU running).
// reboot is kept for engines that want a real reboot; none does yet.
func PowerOff(reboot bool) {
	unix.Sync()
	if os.Getpid() != 1 {
		os.Exit(0)
	}
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if err := unix.Reboot(cmd); err != nil {
		os.Exit(1) // a jail's PID 1 may not reboot: exiting ends it
	}
}

// BootConfigPath is where a VM engine puts the agent's boot configuration
// inside the initramfs.
const BootConfigPath = "/boxlite/config.json"

// BootConfig is the agent's configuration when a VM boots it as /init.
type BootConfig struct {
	Listen     string   `json:"listen"`                // e.g. serial:boxlite.agent or vsock:1024
	Modules    []string `json:"modules,omitempty"`     // load order
	Root       string   `json:"root,omitempty"`        // e.g. /dev/vda
	RootFSType string   `json:"root_fstype,omitempty"` // default ext4
	Hostname   string   `json:"hostname,omitempty"`
	Env        []string `json:"env,omitempty"` // KEY=VALUE for every exec
	// WorkPidsMax limits user processes (see InitConfig.WorkPidsMax).
	WorkPidsMax int `json:"work_pids_max,omitempty"`
	// Net, when set, is the VM's network (see ConfigureNetwork).
	Net *netconf.Config `json:"net,omitempty"`
}
