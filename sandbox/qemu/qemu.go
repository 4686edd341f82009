// Package qemu is the QEMU microvm engine: each box is a `qemu-system-x86_64
// -M microvm` virtual machine booting Debian's cloud kernel with an
// initramfs whose /init is the guest agent. The agent loads the virtio
// modules, mounts the root disk (the image's ext4 under a per-box qcow2
// overlay) and serves the host over vhost-vsock where the host has it, else
// over a named virtio-serial port backed by a unix socket.
//
// KVM is used only when it can really boot a stock kernel; otherwise TCG.
// Boots under TCG hang now and then, so every start has a deadline, races
// QEMU's exit, and is retried.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// Name is the engine's name.
const Name = "qemu"

const (
	handleVersion = 1
	serialPort    = "boxlite.agent" // the virtio-serial port name the agent looks for
	vsockPort     = 1024
	// pidFile is where QEMU records its own pid as it starts (-pidfile).
	pidFile = "qemu.pid"
)

// Config configures the engine. Zero fields take defaults.
type Config struct {
	Home string // required
	// QEMU and QemuImg are the binaries (default: qemu-system-x86_64 and qemu-img from PATH).
	QEMU, QemuImg string
	// Attempts is how many boots a start tries before giving up (default 2).
	Attempts int
	// HelloTimeout bounds one boot until the agent's hello (default 20 s
	// with KVM, 40 s under TCG, where a healthy boot takes 2-5 s and a hung
	// one never answers).
	HelloTimeout time.Duration
	// ExtraAppend is appended to the kernel command line (tests: a broken
	// init argument that never says hello).
	ExtraAppend string
	// ForceTCG ignores KVM even where it is usable.
	ForceTCG bool
	// DieWithParent kills QEMU when the process that started it dies
	// (Pdeathsig). Tests only: boxes are meant to outlive their server, and
	// the signal is tied to the starting thread, not the whole process.
	DieWithParent bool
	// Net is the host side of boxes' networks (see package network).
	Net network.Host
	// Unconfined runs QEMU as the server's own user (root) without the
	// confinement of package sandbox/confine. Benchmarks only: it measures
	// what the confinement costs. A server never sets it.
	Unconfined bool
	Logger     *slog.Logger
}

// Engine is the QEMU engine. It keeps no per-box memory. Safe for concurrent use.
type Engine struct {
	cfg Config
	log *slog.Logger
}

var _ sandbox.Engine = (*Engine)(nil)

// New returns a QEMU engine.
func New(cfg Config) *Engine {
	if cfg.QEMU == "" {
		cfg.QEMU, _ = exec.LookPath("qemu-system-x86_64")
	}
	if cfg.QemuImg == "" {
		cfg.QemuImg, _ = exec.LookPath("qemu-img")
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{cfg: cfg, log: cfg.Logger.With("component", "qemu")}
}

// Name implements sandbox.Engine.
func (e *Engine) Name() string { return Name }

// vhostVsockUsable reports whether QEMU can give guests a vsock device.
func vhostVsockUsable() bool {
	f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func (e *Engine) accel() (kvm bool, why string) {
	ok, why := sandbox.KVMUsable()
	if e.cfg.ForceTCG {
		return false, "TCG (forced)"
	}
	if !ok {
		return false, "TCG, because KVM is unusable: " + why
	}
	return true, "KVM"
}

// Available implements sandbox.Engine.
func (e *Engine) Available(ctx context.Context) sandbox.Availability {
	a := sandbox.Availability{Isolation: "microVM (QEMU microvm, own kernel)"}
	switch {
	case e.cfg.QEMU == "":
		a.Reason = "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
		return a
	case e.cfg.QemuImg == "":
		a.Reason = "qemu-img not found (apt-get install qemu-utils)"
		return a
	}
	kvm, why := e.accel()
	channel := "virtio-serial (no /dev/vhost-vsock)"
	if vhostVsockUsable() {
		channel = "vhost-vsock"
	}
	a.Usable = true
	a.Reason = "QEMU microvm on " + why
	a.Details = append(a.Details, "agent channel: "+channel, e.confinementDetail())
	if !kvm {
		a.Details = append(a.Details, "TCG emulation: boots take seconds and code runs several times slower than native")
	}
	if img, err := image.Locate(e.cfg.Home, "default"); err == nil && img.Manifest.Kernel == nil {
		a.Details = append(a.Details, "the default image has no VM boot files: rebuild it with `boxlite-mcp image build --force`")
	}
	return a
}

// state is the engine's part of the Handle.
type state struct {
	Proc    proc.ID `json:"proc"`
	KVM     bool    `json:"kvm"`
	Channel string  `json:"channel"` // "serial" or "vsock"
	CID     uint32  `json:"cid,omitempty"`
	QMP     string  `json:"qmp"`
	// Net is the box's network helper (boxes with network).
	Net *proc.ID `json:"net,omitempty"`
	// Confined says QEMU runs confined, in the cgroup vmmCgroup(box id).
	Confined bool `json:"confined,omitempty"`
}

func decodeState(h sandbox.Handle) (state, error) {
	var st state
	if len(h.State) == 0 {
		return st, nil
	}
	if h.Engine != Name || h.Version != handleVersion {
		return st, fmt.Errorf("handle of engine %s v%d is not a qemu v%d handle", h.Engine, h.Version, handleVersion)
	}
	return st, json.Unmarshal(h.State, &st)
}

func encode(st state) sandbox.Handle {
	b, _ := json.Marshal(st)
	return sandbox.Handle{Version: handleVersion, Engine: Name, State: b}
}

// Exclusive implements sandbox.ExclusiveChannel: a virtio-serial channel
// takes one host connection at a time.
func (e *Engine) Exclusive(h sandbox.Handle) bool {
	st, _ := decodeState(h)
	return st.Channel != "vsock"
}

// Start implements sandbox.Engine.
func (e *Engine) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Handle, error) {
	img, err := image.Locate(e.cfg.Home, spec.Image)
	if err != nil {
		return sandbox.Handle{}, imageError(spec.Image, err)
	}
	if img.Manifest.Kernel == nil {
		return sandbox.Handle{}, sandbox.Errorf(sandbox.ErrFailedPrecondition, "image %q has no VM kernel; rebuild it with `boxlite-mcp image build --force --name %s`", spec.Image, spec.Image)
	}
	// A QEMU of this box that no handle names was left by a server that
	// died during a start; it holds the disk's write lock. The caller holds
	// the box's lock and the box is not running, so it goes.
	if err := e.killLeftovers(ctx, spec, proc.ID{}); err != nil {
		return sandbox.Handle{}, sandbox.Wrapf(sandbox.ErrInternal, err, "an earlier VM of the box could not be stopped")
	}
	restore, err := e.prepareDisk(ctx, spec, img)
	if err != nil {
		return sandbox.Handle{}, err
	}
	kvm, why := e.accel()
	timeout := e.cfg.HelloTimeout
	if timeout == 0 {
		timeout = 40 * time.Second
		if kvm {
			timeout = 20 * time.Second
		}
	}
	var lastErr error
	for attempt := 1; attempt <= e.cfg.Attempts; attempt++ {
		h, err := e.boot(ctx, spec, img, kvm, timeout, restore)
		if err == nil {
			e.log.Info("vm started", "box_id", spec.ID, "accel", why, "attempt", attempt)
			return h, nil
		}
		lastErr = err
		e.log.Warn("vm boot failed", "box_id", spec.ID, "attempt", attempt, "err", err)
		if ctx.Err() != nil || !errors.Is(err, errNoBoot) {
			break
		}
	}
	if errors.Is(lastErr, errNoBoot) {
		return sandbox.Handle{}, sandbox.Wrapf(sandbox.Class(lastErr), lastErr,
			"the VM did not boot (%s); try again, and if it keeps failing see the server log for box %s",
			sandbox.PublicMessage(lastErr), spec.ID)
	}
	return sandbox.Handle{}, lastErr
}

// imageError gives a failed image.Locate its class and public text: the
// image package's own advice when the image is not built, else no detail
// (the cause may name host paths).
func imageError(name string, err error) error {
	if errors.Is(err, image.ErrNotBuilt) {
		return sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "%s", strings.TrimSuffix(err.Error(), ": "+image.ErrNotBuilt.Error()))
	}
	return sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %q cannot be read; see the server log, or rebuild it with `boxlite-mcp image build --force --name %s`", name, name)
}

// prepareDisk creates the box's qcow2 overlay over the image's ext4 (or,
// for a box made from a snapshot, over the snapshot's disk) once; a restart
// keeps it, so files survive. It returns the memory file a new clone
// resumes from ("" to boot).
func (e *Engine) prepareDisk(ctx context.Context, spec sandbox.Spec, img *image.Image) (string, error) {
	if spec.FromSnapshot != nil {
		return e.cloneDisk(ctx, spec)
	}
	_, err := sandbox.CreateOverlay(ctx, e.cfg.QemuImg, spec.BoxDir, img.Ext4Path(), spec.DiskMiB)
	return "", err
}

// boot runs one QEMU and waits for the agent's hello. With restore (a
// memory file) the VM resumes from it instead of booting (see snapshot.go).
func (e *Engine) boot(ctx context.Context, spec sandbox.Spec, img *image.Image, kvm bool, timeout time.Duration, restore string) (h sandbox.Handle, err error) {
	st := state{KVM: kvm, Channel: "serial", QMP: spec.Socket + ".qmp"}
	listen := "serial:" + serialPort
	if vhostVsockUsable() {
		cid, err := guestCID(spec)
		if err != nil {
			return h, err
		}
		st.Channel, st.CID, listen = "vsock", cid, fmt.Sprintf("vsock:%d", vsockPort)
	}
	var link *os.File
	if spec.Network {
		nid, vmEnd, nerr := e.startNetwork(ctx, spec, img)
		if nerr != nil {
			return h, nerr
		}
		st.Net, link = &nid, vmEnd
		defer vmEnd.Close()
		defer func() {
			if err != nil {
				network.Stop(&nid)
				network.Release(spec.ID)
			}
		}()
	}
	initrd, err := e.writeInitrd(spec, img, listen)
	if err != nil {
		return h, err
	}
	var mem *os.File
	if restore != "" {
		// The devices and boot files must be the snapshot's: its
		// initramfs is copied in (the box's own, readable by its uid).
		os.Remove(initrd)
		if _, err := sandbox.CopyFileCoW(ctx, filepath.Join(spec.FromSnapshot.Dir, snapInitrd), initrd); err != nil {
			return h, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "the snapshot's initramfs is missing")
		}
		if mem, err = os.Open(restore); err != nil {
			return h, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "the snapshot's memory state is missing")
		}
		defer mem.Close()
	}
	if !e.cfg.Unconfined {
		// The confined QEMU reads it as the box's uid (it holds the
		// box's environment: nobody else may).
		base, err := spec.HostIDBase()
		if err != nil {
			return h, err
		}
		if err := os.Lchown(initrd, int(base), int(base)); err != nil {
			return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot hand the initramfs to the VM's uid")
		}
		os.Chmod(initrd, 0o400)
	}
	consolePath := filepath.Join(spec.BoxDir, "console.log")
	console, err := os.OpenFile(consolePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot create the box's console log")
	}
	consoleStart, _ := console.Seek(0, 2)
	fmt.Fprintf(console, "--- boxlite qemu start %s ---\n", time.Now().UTC().Format(time.RFC3339))
	console.Close()
	st.Confined = !e.cfg.Unconfined
	files, err := openVMFiles(spec, st, link)
	if err != nil {
		return h, err
	}
	defer files.close()

	if mem != nil {
		files.mem = files.add(mem)
		mem = nil // files closes it
	}
	args := e.commandLine(spec, img, st, initrd, files)
	if files.mem >= 0 {
		args = append(args, "-incoming", fmt.Sprintf("fd:%d", e.fdOf(files.mem)))
	}
	qlog, err := os.OpenFile(filepath.Join(spec.BoxDir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return h, err
	}
	defer qlog.Close()
	v, err := e.spawn(spec, img, st, args, files, initrd, qlog)
	if err != nil {
		return h, err
	}
	exited := v.exited
	defer func() {
		if err != nil {
			v.abort() // nothing of a failed boot stays running
			os.Remove(spec.Socket)
			os.Remove(st.QMP)
		}
	}()
	// Record QEMU's identity before it runs (a confined QEMU waits for
	// start): a server that dies during the boot leaves it for the next
	// one's Recover and Destroy, which also find it by its cgroup.
	st.Proc = v.id
	h = encode(st)
	if err = sandbox.WriteEngineState(spec.BoxDir, h); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot record the box's state on the server's disk")
	}
	if err = v.start(); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "the VM's QEMU died before it started")
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if files.mem >= 0 {
		if err := resumeIncoming(hctx, st.QMP); err != nil {
			return h, e.bootError(ctx, spec, st, err, timeout, consolePath, consoleStart)
		}
	}
	if err := sandbox.WaitHello(hctx, e.dialer(spec, h), exited, 50*time.Millisecond, "boxlite-mcp/qemu-start"); err != nil {
		return h, e.bootError(ctx, spec, st, err, timeout, consolePath, consoleStart)
	}
	if files.mem >= 0 {
		if err := e.giveIdentity(hctx, spec, h); err != nil {
			return h, sandbox.Wrapf(sandbox.Class(err), err, "the VM resumed from the snapshot did not take its new identity")
		}
	}
	return h, nil
}

// errNoBoot marks a boot that ran but never answered (see bootError).
var errNoBoot = errors.New("the VM did not boot")

// bootError says why a boot did not reach the agent's hello. The public
// text says what happened and where to look; QEMU's own messages and the
// console's last lines are detail: logged with the box id, and kept in the
// internal cause. (The console log stays in the box directory while the
// box exists; its path is in the log line.)
func (e *Engine) bootError(ctx context.Context, spec sandbox.Spec, st state, err error, timeout time.Duration, consolePath string, consoleStart int64) error {
	tail := consoleTail(consolePath, consoleStart, 15)
	qlog, _ := os.ReadFile(filepath.Join(spec.BoxDir, "qemu.log"))
	qmsg := strings.TrimSpace(string(qlog))
	e.log.Warn("vm did not boot", "box_id", spec.ID, "err", err, "qemu_log", qmsg, "console_log", consolePath, "console_tail", tail)
	if st.Channel == "vsock" && cidTaken(qmsg) {
		// Not a boot that hangs now and then: a retry fails the same way.
		return sandbox.Wrapf(sandbox.ErrUnavailable, fmt.Errorf("%w; qemu: %q", err, qmsg),
			"another program on this host (or a boxlite server with another home) uses vsock address CID %d, which this box needs; stop it and try again", st.CID)
	}
	cause := fmt.Errorf("%w: %w; qemu: %q; console: %q", errNoBoot, err, qmsg, tail)
	switch {
	case ctx.Err() != nil:
		return sandbox.Wrapf(sandbox.ErrDeadlineExceeded, cause, "the start was cancelled or ran out of time while the VM booted")
	case !st.Proc.Alive():
		return sandbox.Wrapf(sandbox.ErrUnavailable, cause, "the VM's QEMU exited during the boot")
	default:
		return sandbox.Wrapf(sandbox.ErrUnavailable, cause, "the VM's agent did not answer within %s", timeout)
	}
}

// commandLine builds QEMU's arguments.
func (e *Engine) commandLine(spec sandbox.Spec, img *image.Image, st state, initrd string, v *vmFiles) []string {
	appendArgs := "console=ttyS0 reboot=t panic=-1 quiet loglevel=4 rw"
	if !st.KVM {
		// Under TCG the kernel's TSC calibration against the PIT fails now
		// and then ("Unable to calibrate against PIT"), leaving no working
		// clocksource and a boot that hangs silently. The guest TSC runs at
		// the host TSC's rate under TCG, so tell the kernel that rate
		// (tsc_early_khz; see hostTSCkHz for how it is found).
		//
		// tsc=reliable turns off the kernel's checks of the TSC against
		// other clocks (the boot-time sync test and the clocksource
		// watchdog; kernel-parameters.txt names virtualized environments as
		// its use). A TCG vCPU is a host thread that the host deschedules
		// for whole time slices while the emulated timers it should tick
		// stall with it, so the watchdog sees TSC "skew", marks the TSC
		// unstable and falls back to a worse clocksource (on microvm,
		// jiffies). It is passed only together with a measured rate: with a
		// wrong rate nothing would notice.
		if khz := hostTSCkHz(); khz > 0 {
			appendArgs += fmt.Sprintf(" tsc_early_khz=%d tsc=reliable", khz)
		}
	}
	if e.cfg.ExtraAppend != "" {
		appendArgs += " " + e.cfg.ExtraAppend
	}
	args := []string{
		"-M", "microvm", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-smp", strconv.Itoa(max(spec.CPUs, 1)), "-m", strconv.Itoa(spec.MemoryMiB),
		"-kernel", img.KernelPath(), "-initrd", initrd, "-append", appendArgs,
		// Files and sockets come as descriptors (see vmFiles).
		"-add-fd", fmt.Sprintf("fd=%d,set=2", e.fdOf(v.console)),
		"-chardev", "file,id=con,path=/dev/fdset/2,append=on", "-serial", "chardev:con",
		"-add-fd", fmt.Sprintf("fd=%d,set=1", e.fdOf(v.disk)), "-add-fd", fmt.Sprintf("fd=%d,set=1", e.fdOf(v.diskRO)),
		// file.locking=off: the disk is a descriptor in an fd set, and
		// the open-file locks QEMU takes on its duplicates outlive its own
		// re-opens (a migration's resume failed on them). Exclusivity is
		// the box's lifecycle lock and the VMM cgroup's leftover kill.
		"-drive", "id=root,file=/dev/fdset/1,format=qcow2,file.locking=off,if=none,cache=writeback,discard=unmap,werror=report,rerror=report",
		"-device", "virtio-blk-device,drive=root",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", e.fdOf(v.qmp)), "-mon", "chardev=qmp,mode=control",
		// QEMU's own filter on top of the confinement's: no obsolete
		// calls, no privilege changes, no new processes, no affinity or
		// scheduling changes.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
	}
	if st.KVM {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", fmt.Sprintf("tcg,thread=multi,tb-size=%d", tcgCacheMiB), "-cpu", "max")
	}
	if st.Channel == "vsock" {
		args = append(args, "-device", fmt.Sprintf("vhost-vsock-device,guest-cid=%d,vhostfd=%d", st.CID, e.fdOf(v.vhost)))
	} else {
		args = append(args, "-device", "virtio-serial-device",
			"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", e.fdOf(v.agent)),
			"-device", "virtserialport,chardev=agent,name="+serialPort)
	}
	if v.link >= 0 {
		args = append(args, netArgs(e.fdOf(v.link))...)
	}
	return args
}

// writeInitrd writes the box's initramfs: the image's, followed by a small
// archive with the agent's boot configuration (the kernel unpacks both).
func (e *Engine) writeInitrd(spec sandbox.Spec, img *image.Image, listen string) (string, error) {
	base, err := os.ReadFile(img.InitrdPath())
	if err != nil {
		return "", sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %q has no initramfs; rebuild it", spec.Image)
	}
	env := spec.GuestEnv()
	hostname := spec.Hostname()
	cfg, _ := json.Marshal(guestagent.BootConfig{Listen: listen, Modules: img.Manifest.Kernel.Modules, Root: "/dev/vda",
		RootFSType: "ext4", Hostname: hostname, Env: env, WorkPidsMax: 512, Net: bootNet(spec)})
	var buf bytes.Buffer
	buf.Write(base)
	w := &cpioWriter{w: &buf, total: int64(len(base))}
	w.File(guestagent.BootConfigPath, 0o600, cfg)
	if err := w.Close(); err != nil {
		return "", err
	}
	p := filepath.Join(spec.BoxDir, "initrd.cpio")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		return "", sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot write the box's initramfs")
	}
	return p, nil
}

// Dial implements sandbox.Engine.
func (e *Engine) Dial(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) (net.Conn, error) {
	st, err := decodeState(h)
	if err != nil {
		return nil, err
	}
	// Only the process h names is the box: an unrecorded or older QEMU
	// answering on the box's socket is a leftover Recover will kill.
	if !st.Proc.Alive() {
		return nil, fmt.Errorf("qemu of box %s (pid %d): %w", spec.ID, st.Proc.PID, sandbox.ErrNotRunning)
	}
	if st.Channel == "vsock" {
		return dialGuest(ctx, st.CID)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", spec.Socket)
	if err != nil {
		return nil, err
	}
	if err := wire.SyncSerialHost(ctx, conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent channel handshake: %w", err)
	}
	return conn, nil
}

// dialer binds Dial to one box.
func (e *Engine) dialer(spec sandbox.Spec, h sandbox.Handle) sandbox.Dialer {
	return func(ctx context.Context) (net.Conn, error) { return e.Dial(ctx, spec, h) }
}

// Recover implements sandbox.Engine. The box is the QEMU h names; any
// other QEMU recorded in the box directory (a zero h: all of them) was left
// by a server that died during a start, and is killed.
func (e *Engine) Recover(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := decodeState(h)
	if err != nil {
		return err
	}
	if st.Proc.Alive() {
		resumePaused(ctx, st.QMP) // a server that died during a snapshot left it paused
		return nil
	}
	if err := e.killLeftovers(ctx, spec, proc.ID{}); err != nil {
		return err
	}
	cleanup(spec, st)
	return sandbox.ErrNotRunning
}

// Stop implements sandbox.Engine: the agent's shutdown (sync, power off),
// then QMP quit, then SIGKILL; and SIGKILL for any QEMU of the box that h
// does not name.
func (e *Engine) Stop(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, grace time.Duration) error {
	st, err := decodeState(h)
	if err != nil {
		// The box directory's records still find its processes.
		e.log.Warn("unreadable handle; stopping what the box directory records", "box_id", spec.ID, "err", err)
		st = state{}
	}
	var errs []error
	if st.Proc.PID != 0 {
		quit := func() { qmpQuit(st.QMP, 3*time.Second) }
		if err := sandbox.StopProcess(ctx, st.Proc, e.dialer(spec, h), grace, quit); err != nil {
			errs = append(errs, fmt.Errorf("qemu: %w", err))
		}
	}
	if err := e.killLeftovers(ctx, spec, st.Proc); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	cleanup(spec, st)
	return nil
}

// recorded returns the box's live QEMU processes that its directory
// records: the one in engine.json (written right after the spawn, then by
// the manager) and the one in QEMU's own pid file, which QEMU writes as it
// starts and so covers a server killed between the spawn and its record.
func recorded(spec sandbox.Spec) []proc.ID {
	var ids []proc.ID
	if spec.BoxDir == "" {
		return nil
	}
	if h, err := sandbox.ReadEngineState(spec.BoxDir); err == nil && h.Engine == Name {
		if st, err := decodeState(h); err == nil && st.Proc.Alive() {
			ids = append(ids, st.Proc)
		}
	}
	if id, ok := pidFileProc(filepath.Join(spec.BoxDir, pidFile)); ok && !slices.Contains(ids, id) {
		ids = append(ids, id)
	}
	return ids
}

// pidFileProc reads a QEMU pid file. It holds only a pid, which may have
// been reused since: the process must also carry this very pid file on its
// command line, checked between two reads of its start time.
func pidFileProc(path string) (proc.ID, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return proc.ID{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return proc.ID{}, false
	}
	id, err := proc.Of(pid)
	if err != nil {
		return proc.ID{}, false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), path) || !id.Alive() {
		return proc.ID{}, false
	}
	return id, true
}

// killLeftovers kills every live QEMU of the box except keep: those its
// directory records and everything in its VMM cgroup (a confined QEMU is
// there from its first instruction); it returns an error if one survives.
func (e *Engine) killLeftovers(ctx context.Context, spec sandbox.Spec, keep proc.ID) error {
	var errs []error
	ids := recorded(spec)
	for _, pid := range confine.Procs(vmmCgroup(spec.ID)) {
		if id, err := proc.Of(pid); err == nil && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		if id == keep {
			continue
		}
		e.log.Warn("killing a QEMU of the box that no handle names (left by a server that died during a start)", "box_id", spec.ID, "pid", id.PID)
		if err := sandbox.StopProcess(ctx, id, nil, 0, nil); err != nil {
			errs = append(errs, fmt.Errorf("leftover qemu: %w", err))
		}
	}
	return errors.Join(errs...)
}

// qmpQuit asks QEMU to exit through its QMP socket.
func qmpQuit(path string, timeout time.Duration) error {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		return err
	}
	for _, cmd := range []string{`{"execute":"qmp_capabilities"}`, `{"execute":"quit"}`} {
		if _, err := c.Write([]byte(cmd + "\n")); err != nil {
			return err
		}
		if _, err := r.ReadString('\n'); err != nil {
			return err
		}
	}
	return nil
}

func cleanup(spec sandbox.Spec, st state) {
	network.Stop(st.Net)
	network.Release(spec.ID)
	confine.Remove(vmmCgroup(spec.ID))
	os.Remove(spec.Socket)
	if st.QMP != "" {
		os.Remove(st.QMP)
	}
}

// Destroy implements sandbox.Engine. It kills the QEMU h names and any
// other the box directory records (h may be zero), and fails, keeping the
// box directory for a retry to find them by, while one still runs.
func (e *Engine) Destroy(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	if err := e.Stop(ctx, spec, h, 0); err != nil {
		return err
	}
	os.Remove(spec.Socket)
	os.Remove(spec.Socket + ".qmp")
	if spec.BoxDir != "" {
		return os.RemoveAll(spec.BoxDir)
	}
	return nil
}

func consoleTail(path string, offset int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b[offset:])), "\n")
	var keep []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--- boxlite") {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}
