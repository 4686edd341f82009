package krun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// vmmOverheadMiB is what a krun shim takes beyond its guest's memory:
// libkrun's device emulation (virtio-blk with its qcow2 cache, vsock and
// net queues, the console), libkrunfw's kernel image (mapped from a file,
// so charged as page cache) and the shim's Go runtime. libkrun has no
// translation cache (it needs real KVM), so this is below QEMU's 320 MiB
// (which includes a 128 MiB TCG cache). Not measured against a real libkrun
// here (none installable, no usable KVM); the test double's shim plus the
// agent it runs peak far below it (TestKrunShimRunsConfined logs the peak).
const vmmOverheadMiB = 192

// vmmPids bounds a shim's threads: vCPUs, libkrun's per-device worker
// threads and the Go runtime's.
const vmmPids = 256

// vmmCgroup is the name of box id's shim cgroup (as QEMU's: see sandbox/qemu).
func vmmCgroup(id string) string { return id + ".vmm" }

// Names in the shim's private directory (see vmmDir).
const (
	agentSockName = "agent.sock"
	consoleName   = "console.log"
	exitName      = "exit.json"
)

// maxExitRecord caps what the host reads of a shim's exit record.
const maxExitRecord = 64 << 10

// vmmDir is the one directory the confined shim may write: libkrun takes
// paths, not descriptors, for the agent's socket (which it creates), the
// console log and (ours) the exit record. It is <box dir>/vmm, or, when the
// socket's path there would not fit sun_path, <agent socket>.d in the run
// directory (whose paths the manager keeps short). Owned by the box's uid,
// it is HOSTILE to the host: the shim can put anything under any name in
// it, so the host never follows a name there (see openNoFollow, dialSocket).
func vmmDir(spec sandbox.Spec) string {
	d := filepath.Join(spec.BoxDir, "vmm")
	if len(filepath.Join(d, agentSockName)) < 100 {
		return d
	}
	return spec.Socket + ".d"
}

// agentSocket is where libkrun listens for the host's agent connections.
func agentSocket(spec sandbox.Spec) string { return filepath.Join(vmmDir(spec), agentSockName) }

// prepareVMMDir makes the shim's directory (kept across restarts: it may
// hold nothing the host relies on) owned by uid, mode 0700, and removes the
// names libkrun must create itself. The directory's parent is root's, so
// the shim cannot replace the directory itself; Lstat refuses anything
// else planted at its name by a host process.
func prepareVMMDir(dir string, uid uint32) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if confine.Supported { // else the shim runs as the server's user
		if err := os.Lchown(dir, int(uid), int(uid)); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	// Unlink never follows a symlink: these are safe in a hostile directory.
	for _, n := range []string{agentSockName, exitName} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// readExitRecord reads the shim's exit record without following a name
// in its directory and at most maxExitRecord bytes of it.
func readExitRecord(dir string) exitRecord {
	var rec exitRecord
	f, err := os.OpenFile(filepath.Join(dir, exitName), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return rec
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return rec // a FIFO or device planted there would block or worse
	}
	b, _ := io.ReadAll(io.LimitReader(f, maxExitRecord))
	json.Unmarshal(b, &rec)
	return rec
}

// spawnShim starts the box's shim confined (package sandbox/confine), held
// at its start line until the caller has recorded it and calls Go: as the
// box's unprivileged host uid, in its own user, mount, pid, ipc, uts and
// an empty network namespace, seeing only its libraries, libkrun, the
// image (read-only), the box's disk (one file) and its private directory
// (read-write), /dev/kvm, in the cgroup vmmCgroup(id) limiting memory to
// the guest's plus vmmOverheadMiB. pass are descriptors it gets (the
// network link), cfg its configuration (sent on stdin).
func (e *Engine) spawnShim(spec sandbox.Spec, img *image.Image, cfg shimConfig, pass []*os.File, logf *os.File) (*confine.Process, error) {
	uid, err := spec.HostIDBase()
	if err != nil {
		return nil, err
	}
	stage, err := confine.StageBinary(filepath.Join(img.RootfsDir(), image.AgentPath))
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %q has no guest agent to confine the VM with; rebuild it", spec.Image)
	}
	defer stage.Close()
	exe, err := os.Open(e.cfg.ShimExe)
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot open the krun shim")
	}
	defer exe.Close()
	// The disk is the shim's to write (libkrun opens it by path): one file.
	if confine.Supported {
		if err := os.Lchown(cfg.Disk, int(uid), int(uid)); err != nil {
			return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot hand the box's disk to its VM")
		}
	}
	cfgJSON, _ := json.Marshal(cfg)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot make the shim's input")
	}
	defer stdinR.Close()
	go func() { // the pipe's buffer may be smaller than a large environment
		stdinW.Write(cfgJSON)
		stdinW.Close()
	}()
	cs := confine.Spec{Name: vmmCgroup(spec.ID), UID: uid, Stage: stage, Exe: exe,
		Args:     []string{"boxlite-krun-shim", ShimArg},
		Env:      append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, e.cfg.ShimEnv...),
		Binds:    []confine.Bind{{Path: img.Dir}, {Path: cfg.Disk, Writable: true}, {Path: vmmDir(spec), Writable: true}},
		Pass:     pass,
		Hostname: "vmm-" + spec.ID,
		Stdin:    stdinR, Stdout: logf, Stderr: logf,
		Limits: cgroups.Limits{MemoryBytes: int64(spec.MemoryMiB+vmmOverheadMiB) << 20, PidsMax: vmmPids,
			CPUWeight: max(spec.CPUs, 1)},
		DieWithParent: e.cfg.DieWithParent,
	}
	cs.Binds = append(cs.Binds, e.cfg.ShimBinds...)
	if filepath.IsAbs(e.cfg.Library) {
		// libkrun loads libkrunfw from its search path: usually libkrun's own directory.
		cs.Binds = append(cs.Binds, confine.Bind{Path: filepath.Dir(e.cfg.Library)})
	}
	cs.UseDevice("/dev/kvm")
	p, err := confine.Start(cs)
	if err != nil {
		stdinW.Close()
		return nil, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the VM's confined krun shim")
	}
	return p, nil
}

// confinementDetail says, for doctor, how krun shims run here.
func confinementDetail() string {
	if !confine.Supported {
		return "VMM confinement: NONE on this OS (no namespaces or cgroups): the krun shim runs as the server's own user"
	}
	info, err := cgroups.Detect()
	if err != nil || !info.Has("memory") || !info.Has("pids") {
		return fmt.Sprintf("VMM confinement: UNAVAILABLE (cgroups: %v %v): boxes cannot start", info, err)
	}
	return "VMM confinement: the krun shim runs as the box's unprivileged uid in its own user, mount, pid, ipc, uts and network namespaces, " +
		"a read-only root of its libraries and the image plus the box's disk and one private directory, no capabilities, the jail's seccomp filter, " +
		"and a cgroup (" + info.String() + ") limiting memory to the guest's + " + fmt.Sprint(vmmOverheadMiB) + " MiB and pids to " + fmt.Sprint(vmmPids)
}
