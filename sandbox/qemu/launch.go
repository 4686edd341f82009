package qemu

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/confinespec"
	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// vmmOverheadMiB is what a QEMU takes beyond its guest's memory: the TCG
// translation cache (capped with tb-size), device emulation, its own heap
// and libraries. Measured: see BENCHMARKS.md ("VMM memory").
const vmmOverheadMiB = 320

// tcgCacheMiB caps TCG's translation cache (QEMU's default grows to 1 GiB
// on 64-bit hosts), which keeps the VMM's memory limit meaningful.
const tcgCacheMiB = 128

// vmmPids bounds a VMM's threads: vCPUs, its I/O and RCU threads and the
// worker pool QEMU grows to 64.
const vmmPids = 256

// vmmCgroup is the name of box id's VMM cgroup.
func vmmCgroup(id string) string { return id + ".vmm" }

// vmFiles are the descriptors a QEMU gets instead of paths: its disk, its
// console log, its QMP and agent sockets (listening), the vhost-vsock
// device and its network link. With them it needs no writable path at all,
// so a compromised VMM cannot plant a symlink in the box directory for the
// server (root) to follow.
type vmFiles struct {
	list []*os.File
	// indexes into list; -1 when absent. The disk comes twice, read-only
	// and read-write: QEMU picks from its fd set by access mode, and opens
	// the image read-only first.
	// mem is a snapshot's memory state to restore (-incoming).
	disk, diskRO, console, qmp, agent, vhost, link, mem int
}

func (v *vmFiles) add(f *os.File) int {
	v.list = append(v.list, f)
	return len(v.list) - 1
}

func (v *vmFiles) close() {
	for _, f := range v.list {
		f.Close()
	}
}

// listenFile listens on a unix socket at path and returns the listener as
// a file to hand over; the path stays for the host to connect to.
func listenFile(path string) (*os.File, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	return l.File()
}

// openVMFiles opens what the box's QEMU gets; link is the VM's end of the
// network link (nil without network).
func openVMFiles(spec sandbox.Spec, st state, link *os.File) (v *vmFiles, err error) {
	v = &vmFiles{disk: -1, diskRO: -1, console: -1, qmp: -1, agent: -1, vhost: -1, link: -1, mem: -1}
	defer func() {
		if err != nil {
			v.close()
		}
	}()
	disk, err := os.OpenFile(filepath.Join(spec.BoxDir, sandbox.DiskFile), os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot open the box's disk")
	}
	v.disk = v.add(disk)
	diskRO, err := os.OpenFile(filepath.Join(spec.BoxDir, sandbox.DiskFile), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot open the box's disk")
	}
	v.diskRO = v.add(diskRO)
	console, err := os.OpenFile(filepath.Join(spec.BoxDir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot create the box's console log")
	}
	v.console = v.add(console)
	qmp, err := listenFile(st.QMP)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot create the VM's control socket")
	}
	v.qmp = v.add(qmp)
	if st.Channel == "vsock" {
		f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
		if err != nil {
			return nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot open /dev/vhost-vsock")
		}
		v.vhost = v.add(f)
	} else {
		f, err := listenFile(spec.Socket)
		if err != nil {
			return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot create the box's agent socket")
		}
		v.agent = v.add(f)
	}
	if link != nil {
		f, err := dupFile(link)
		if err != nil {
			return nil, err
		}
		v.link = v.add(f)
	}
	return v, nil
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// vm is a spawned QEMU, held before it runs anything (confined) or
// already running (unconfined).
type vm struct {
	id     proc.ID
	exited <-chan error
	start  func() error // lets it run
	abort  func()       // kills it (and removes its cgroup)
}

// spawn starts QEMU with args, confined (package sandbox/confine) unless
// the engine is configured otherwise: as the box's unprivileged host uid,
// in its own namespaces (an empty network namespace included), a root that
// holds only its libraries, the image's boot files and the box's initramfs
// (all read-only) and its devices, in a cgroup limiting its memory to the
// guest's plus vmmOverheadMiB, under the jail's seccomp filter and QEMU's
// own -sandbox. fdOf must match how spawn numbers v's descriptors (fdBase).
func (e *Engine) spawn(spec sandbox.Spec, img *image.Image, st state, args []string, v *vmFiles, initrd string, qlog *os.File) (*vm, error) {
	if e.cfg.Unconfined {
		cmd := exec.Command(e.cfg.QEMU, args...)
		cmd.Stdout, cmd.Stderr = qlog, qlog
		cmd.ExtraFiles = v.list
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if e.cfg.DieWithParent {
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}
		if err := cmd.Start(); err != nil {
			return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot start qemu")
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); close(exited) }() // owns Wait: reaps QEMU whenever it ends
		id, err := proc.Of(cmd.Process.Pid)
		if err != nil {
			cmd.Process.Kill()
			return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "the VM process vanished as it started")
		}
		return &vm{id: id, exited: exited, start: func() error { return nil }, abort: func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}}, nil
	}
	uid, err := spec.HostIDBase()
	if err != nil {
		return nil, err
	}
	stage, err := confine.StageBinary(filepath.Join(img.RootfsDir(), image.AgentPath))
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %q has no guest agent to confine the VM with; rebuild it", spec.Image)
	}
	defer stage.Close()
	exe, err := os.Open(e.cfg.QEMU)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot open qemu")
	}
	defer exe.Close()
	cs := confine.Spec{Name: vmmCgroup(spec.ID), UID: uid, Stage: stage, Exe: exe,
		Args:     append([]string{filepath.Base(e.cfg.QEMU)}, args...),
		Binds:    []confine.Bind{{Path: img.Dir}, {Path: initrd}},
		Pass:     v.list,
		Hostname: "vmm-" + spec.ID,
		Stdout:   qlog, Stderr: qlog,
		Limits: cgroups.Limits{MemoryBytes: int64(spec.MemoryMiB+vmmOverheadMiB) << 20, PidsMax: vmmPids,
			CPUWeight: max(spec.CPUs, 1)},
		DieWithParent: e.cfg.DieWithParent,
	}
	if src := spec.FromSnapshot; src != nil {
		// A clone's disk is backed by the snapshot's, which it reads
		// through the snapshot's group (see Snapshot).
		cs.Binds = append(cs.Binds, confine.Bind{Path: filepath.Join(src.Dir, sandbox.DiskFile)})
		if fi, err := os.Stat(filepath.Join(src.Dir, sandbox.DiskFile)); err == nil {
			if sys, ok := fi.Sys().(*syscall.Stat_t); ok && sys.Gid != 0 && sys.Gid != uid {
				cs.Groups = append(cs.Groups, sys.Gid)
			}
		}
	}
	if st.KVM {
		cs.UseDevice("/dev/kvm")
	}
	p, err := confine.Start(cs)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the VM's confined QEMU")
	}
	return &vm{id: p.ID, exited: p.Exited, start: p.Go, abort: p.Abort}, nil
}

// fdOf is the number QEMU sees v.list[i] under.
func (e *Engine) fdOf(i int) int {
	if e.cfg.Unconfined {
		return 3 + i
	}
	return confinespec.PassFD(i)
}

// confinementDetail says, for doctor, how VMMs run here.
func (e *Engine) confinementDetail() string {
	if e.cfg.Unconfined {
		return "VMM confinement: OFF (configuration): QEMU runs as host root"
	}
	info, err := cgroups.Detect()
	if err != nil || !info.Has("memory") || !info.Has("pids") {
		return fmt.Sprintf("VMM confinement: UNAVAILABLE (cgroups: %v %v): boxes cannot start", info, err)
	}
	return "VMM confinement: QEMU runs as the box's unprivileged uid in its own user, mount, pid, ipc, uts and network namespaces, " +
		"a read-only root of its libraries and boot files, no capabilities, the jail's seccomp filter plus QEMU's -sandbox, " +
		"and a cgroup (" + info.String() + ") limiting memory to the guest's + " + fmt.Sprint(vmmOverheadMiB) + " MiB and pids to " + fmt.Sprint(vmmPids)
}
