// Package krun is the libkrun engine: each box is a libkrun microVM (KVM on
// Linux, Hypervisor.framework on macOS) booting libkrunfw's kernel from the
// image's ext4 under a per-box qcow2 overlay, with the guest agent as the
// workload, reached through a vsock port that libkrun maps to a unix socket.
//
// libkrun is loaded at run time (dlopen), so boxlite-mcp builds and runs
// where it is absent; the engine then reports itself unavailable with the
// reason. Each box runs in a shim: boxlite-mcp re-executed with ShimArg,
// detached, its configuration on stdin.
//
// Verified here only against a test double of libkrun (see krun_test.go):
// the real library cannot be installed on the Debian CI hosts, whose KVM
// also cannot boot its kernel.
package krun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/confinespec"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// Name is the engine's name.
const Name = "krun"

const (
	handleVersion = 1
	agentPort     = 1024
)

const install = "install libkrun (Fedora: `dnf install libkrun`; macOS: `brew tap slp/krun && brew install krun`)"

// Config configures the engine. Zero fields take defaults.
type Config struct {
	Home string // required
	// Library is what to dlopen (default libkrun.so.1, libkrun.1.dylib on macOS).
	Library string
	// ShimExe is the binary re-executed as the shim (default: os.Executable()).
	ShimExe string
	// ShimEnv is added to the shim's environment (e.g. LD_LIBRARY_PATH).
	ShimEnv []string
	// ShimBinds are extra host paths the confined shim sees (a libkrunfw
	// outside libkrun's directory and the system's; tests: the test
	// double's call log).
	ShimBinds []confine.Bind
	// QemuImg creates the per-box qcow2 overlays (default: qemu-img from PATH).
	QemuImg string
	// HelloTimeout bounds a start until the agent's hello (default 30 s).
	HelloTimeout time.Duration
	// SkipHypervisorCheck skips the KVM/HVF check (the test double needs none).
	SkipHypervisorCheck bool
	// Net is the host side of boxes' networks (see package network).
	Net network.Host
	// DieWithParent kills a shim when the thread that started it ends (tests).
	DieWithParent bool
	Logger        *slog.Logger
}

// Engine is the libkrun engine. It keeps no per-box memory. Safe for concurrent use.
type Engine struct {
	cfg Config
	log *slog.Logger
}

var _ sandbox.Engine = (*Engine)(nil)

// New returns a krun engine.
func New(cfg Config) *Engine {
	if cfg.Library == "" {
		cfg.Library = LibName()
	}
	if cfg.ShimExe == "" {
		cfg.ShimExe, _ = os.Executable()
	}
	if cfg.QemuImg == "" {
		cfg.QemuImg, _ = exec.LookPath("qemu-img")
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{cfg: cfg, log: cfg.Logger.With("component", "krun")}
}

// Name implements sandbox.Engine.
func (e *Engine) Name() string { return Name }

// Available implements sandbox.Engine.
func (e *Engine) Available(ctx context.Context) sandbox.Availability {
	a := sandbox.Availability{Isolation: "microVM (libkrun, own kernel)"}
	lib, err := Open(e.cfg.Library)
	if err != nil {
		a.Reason = fmt.Sprintf("%s cannot be loaded (%v); %s", e.cfg.Library, err, install)
		return a
	}
	if m := lib.Missing(); len(m) > 0 {
		a.Reason = fmt.Sprintf("libkrun too old: missing %s; upgrade it", strings.Join(m, ", "))
		return a
	}
	if !e.cfg.SkipHypervisorCheck {
		if runtime.GOOS == "linux" {
			if ok, why := sandbox.KVMUsable(); !ok {
				a.Reason = "KVM is unusable: " + why
				return a
			}
		}
	}
	if e.cfg.QemuImg == "" {
		a.Reason = "qemu-img not found (needed for the per-box qcow2 overlays: apt-get/dnf install qemu-img)"
		return a
	}
	if !lib.CanNetwork() {
		a.Details = append(a.Details, "libkrun has no krun_add_net_unixstream: boxes with network are refused")
	}
	if !lib.CanDisableNetwork() {
		a.Details = append(a.Details, "libkrun < 1.17: a box's network cannot be confined (krun_disable_implicit_vsock), so boxes are refused")
	}
	a.Details = append(a.Details, confinementDetail())
	a.Usable = true
	a.Reason = "libkrun loaded from " + e.cfg.Library
	return a
}

type state struct {
	Proc proc.ID `json:"proc"`
	// Net is the box's network helper (boxes with network).
	Net *proc.ID `json:"net,omitempty"`
}

func encode(st state) sandbox.Handle {
	b, _ := json.Marshal(st)
	return sandbox.Handle{Version: handleVersion, Engine: Name, State: b}
}

func decodeState(h sandbox.Handle) (state, error) {
	var st state
	if len(h.State) == 0 {
		return st, nil
	}
	if h.Engine != Name || h.Version != handleVersion {
		return st, fmt.Errorf("handle of engine %s v%d is not a krun v%d handle", h.Engine, h.Version, handleVersion)
	}
	return st, json.Unmarshal(h.State, &st)
}

// Start implements sandbox.Engine.
func (e *Engine) Start(ctx context.Context, spec sandbox.Spec) (h sandbox.Handle, err error) {
	if a := e.Available(ctx); !a.Usable {
		// The reason names host paths and loader errors: it is for the
		// operator (doctor prints it), not for the client.
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, errors.New(a.Reason),
			"the krun engine is not usable on this host; `boxlite-mcp doctor` on the server says why and what to install")
	}
	lib, err := Open(e.cfg.Library)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "libkrun cannot be loaded")
	}
	if !lib.CanDisableNetwork() {
		// Without it every box would get libkrun's TSI network, unfiltered.
		return h, sandbox.Errorf(sandbox.ErrUnavailable, "libkrun is too old to confine a box's network (needs 1.17: krun_disable_implicit_vsock); upgrade libkrun")
	}
	img, err := image.Locate(e.cfg.Home, spec.Image)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "%s", strings.TrimSuffix(err.Error(), ": "+image.ErrNotBuilt.Error()))
	}
	// A shim of this box that no handle names was left by a server that
	// died during a start. The caller holds the box's lock and the box is
	// not running, so it goes.
	if err := e.killLeftovers(ctx, spec, proc.ID{}); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "an earlier VM of the box could not be stopped")
	}
	disk, err := sandbox.CreateOverlay(ctx, e.cfg.QemuImg, spec.BoxDir, img.Ext4Path(), spec.DiskMiB)
	if err != nil {
		return h, err
	}
	uid, err := spec.HostIDBase()
	if err != nil {
		return h, err
	}
	// The shim's one writable directory. libkrun creates the agent's socket
	// there itself and refuses an existing path (prepareVMMDir removes it).
	dir := vmmDir(spec)
	if err := prepareVMMDir(dir, uid); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot prepare the VM's directory")
	}
	env := spec.GuestEnv()
	cfg := shimConfig{
		Library: e.cfg.Library, CPUs: uint8(max(spec.CPUs, 1)), MemoryMiB: uint32(spec.MemoryMiB), Disk: disk, RootDevice: "/dev/vda",
		Console: filepath.Join(dir, consoleName), Socket: agentSocket(spec), Port: agentPort, Network: spec.Network,
		Exec: image.AgentPath, Args: []string{"--listen", fmt.Sprintf("vsock:%d", agentPort), "--init"},
		Env: env, Workdir: "/root", Rlimits: []string{"7=1048576:1048576"}, ExitRecord: filepath.Join(dir, exitName),
	}
	var netID *proc.ID
	var pass []*os.File
	if spec.Network {
		id, link, args, err := e.startNetwork(ctx, spec, lib, filepath.Join(img.RootfsDir(), image.AgentPath))
		if err != nil {
			return h, err
		}
		netID = &id
		defer link.Close() // the shim has its own copy
		defer func() {
			if err != nil {
				network.Stop(netID)
				network.Release(spec.ID)
			}
		}()
		pass = append(pass, link)
		cfg.NetFD, cfg.NetMAC, cfg.Args = confinespec.PassFD(0), network.GuestMAC, append(cfg.Args, args...)
	}
	logf, err := os.OpenFile(filepath.Join(spec.BoxDir, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot create the shim's log")
	}
	defer logf.Close()
	p, err := e.spawnShim(spec, img, cfg, pass, logf)
	if err != nil {
		return h, err
	}
	defer func() {
		if err != nil {
			p.Abort() // kills it, waits, removes its cgroup
		}
	}()
	// Record the shim's identity before it runs anything, so a server
	// that dies during the boot leaves it for the next one's Recover and
	// Destroy (and its cgroup names it too).
	id := p.ID
	h = encode(state{Proc: id, Net: netID})
	if err = sandbox.WriteEngineState(spec.BoxDir, h); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot record the box's state on the server's disk")
	}
	if err = p.Go(); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "the VM's shim died as it started")
	}
	hctx, cancel := context.WithTimeout(ctx, e.cfg.HelloTimeout)
	defer cancel()
	if err = sandbox.WaitHello(hctx, e.dialer(spec, h), p.Exited, 20*time.Millisecond, "boxlite-mcp/krun-start"); err != nil {
		return h, e.bootError(ctx, spec, id, err)
	}
	e.log.Info("krun box started", "box_id", spec.ID, "pid", id.PID)
	return h, nil
}

// bootError says why a start did not reach the agent's hello. The public
// text says what happened and where to look; libkrun's error (a C function
// and its return code) and the shim's log are detail: logged with the box
// id, and kept in the internal cause.
func (e *Engine) bootError(ctx context.Context, spec sandbox.Spec, shim proc.ID, err error) error {
	rec := readExitRecord(vmmDir(spec))
	shimLog, _ := os.ReadFile(filepath.Join(spec.BoxDir, "shim.log"))
	logTail := lastLines(string(shimLog), 10)
	e.log.Warn("krun vm did not boot", "box_id", spec.ID, "err", err, "libkrun_error", rec.Reason, "shim_log", logTail,
		"console_log", filepath.Join(vmmDir(spec), consoleName))
	cause := fmt.Errorf("%w; libkrun: %q; shim log: %q", err, rec.Reason, logTail)
	switch {
	case ctx.Err() != nil:
		return sandbox.Wrapf(sandbox.ErrDeadlineExceeded, cause, "the start was cancelled or ran out of time while the VM booted")
	case rec.Reason != "":
		return sandbox.Wrapf(sandbox.ErrUnavailable, cause,
			"libkrun could not boot the VM; see the server log for box %s (`boxlite-mcp doctor` checks the host's libkrun and KVM)", spec.ID)
	case !shim.Alive():
		return sandbox.Wrapf(sandbox.ErrUnavailable, cause, "the VM exited during the boot; see the server log for box %s", spec.ID)
	default:
		return sandbox.Wrapf(sandbox.ErrUnavailable, cause, "the VM's agent did not answer within %s; see the server log for box %s", e.cfg.HelloTimeout, spec.ID)
	}
}

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// Dial implements sandbox.Engine: libkrun forwards each connection to the
// guest's vsock port. The socket is in the shim's directory, which the host
// treats as hostile (see dialSocket).
func (e *Engine) Dial(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) (net.Conn, error) {
	st, err := decodeState(h)
	if err != nil {
		return nil, err
	}
	// Only the process h names is the box: an unrecorded or older shim
	// answering on the box's socket is a leftover Recover will kill.
	if !st.Proc.Alive() {
		return nil, fmt.Errorf("krun shim of box %s (pid %d): %w", spec.ID, st.Proc.PID, sandbox.ErrNotRunning)
	}
	uid, err := spec.HostIDBase()
	if err != nil {
		return nil, err
	}
	return dialSocket(ctx, agentSocket(spec), uid)
}

// dialer binds Dial to one box.
func (e *Engine) dialer(spec sandbox.Spec, h sandbox.Handle) sandbox.Dialer {
	return func(ctx context.Context) (net.Conn, error) { return e.Dial(ctx, spec, h) }
}

// Recover implements sandbox.Engine. The box is the shim h names; any
// other shim recorded in the box directory or left in its cgroup (a zero
// h: any) was left by a server that died during a start, and is killed.
func (e *Engine) Recover(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := decodeState(h)
	if err != nil {
		return err
	}
	if st.Proc.Alive() {
		return nil
	}
	if err := e.killLeftovers(ctx, spec, proc.ID{}); err != nil {
		return err
	}
	cleanup(spec, st)
	return sandbox.ErrNotRunning
}

// Stop implements sandbox.Engine: the agent's shutdown (the guest powers
// off and libkrun exits the shim), then SIGTERM, then SIGKILL; and SIGKILL
// for a shim of the box that h does not name.
func (e *Engine) Stop(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, grace time.Duration) error {
	st, err := decodeState(h)
	if err != nil {
		// The box directory's record and the cgroup still find its process.
		e.log.Warn("unreadable handle; stopping what the box directory records", "box_id", spec.ID, "err", err)
		st = state{}
	}
	var errs []error
	if st.Proc.PID != 0 {
		term := func() { st.Proc.Signal(syscall.SIGTERM) }
		if err := sandbox.StopProcess(ctx, st.Proc, e.dialer(spec, h), grace, term); err != nil {
			errs = append(errs, fmt.Errorf("krun shim: %w", err))
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

// killLeftovers kills every live shim of the box except keep: the one the
// box directory records (see sandbox.WriteEngineState) and everything in
// its VMM cgroup (a confined shim is there from its first instruction);
// an error if one survives.
func (e *Engine) killLeftovers(ctx context.Context, spec sandbox.Spec, keep proc.ID) error {
	var ids []proc.ID
	if spec.BoxDir != "" {
		if h, err := sandbox.ReadEngineState(spec.BoxDir); err == nil && h.Engine == Name {
			if st, err := decodeState(h); err == nil && st.Proc.PID != 0 {
				ids = append(ids, st.Proc)
			}
		}
	}
	for _, pid := range confine.Procs(vmmCgroup(spec.ID)) {
		if id, err := proc.Of(pid); err == nil && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	var errs []error
	for _, id := range ids {
		if id == keep || !id.Alive() {
			continue
		}
		e.log.Warn("killing a krun shim of the box that no handle names (left by a server that died during a start)", "box_id", spec.ID, "pid", id.PID)
		if err := sandbox.StopProcess(ctx, id, nil, 0, nil); err != nil {
			errs = append(errs, fmt.Errorf("leftover krun shim: %w", err))
		}
	}
	return errors.Join(errs...)
}

// cleanup releases what a stopped box's shim held: its network helper, its
// cgroup, its agent socket.
func cleanup(spec sandbox.Spec, st state) {
	network.Stop(st.Net)
	network.Release(spec.ID)
	confine.Remove(vmmCgroup(spec.ID))
	os.Remove(agentSocket(spec)) // unlink follows no symlink
}

// Destroy implements sandbox.Engine. It kills the shim h names and any
// other the box directory or cgroup holds (h may be zero), and fails,
// keeping the box directory for a retry to find it by, while one still runs.
func (e *Engine) Destroy(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	if err := e.Stop(ctx, spec, h, 0); err != nil {
		return err
	}
	// RemoveAll opens nothing it removes by following a symlink.
	if err := os.RemoveAll(vmmDir(spec)); err != nil {
		return err
	}
	if spec.BoxDir != "" {
		return os.RemoveAll(spec.BoxDir)
	}
	return nil
}
