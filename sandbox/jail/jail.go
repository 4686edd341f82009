// Package jail is the namespace engine: each box is a process tree in its
// own user, mount, pid, net, uts and ipc namespaces, on an overlayfs root
// (the image's rootfs/ below, the box's upper/ above), inside cgroups that
// limit memory, pids and CPU, under a seccomp filter. It needs no
// virtualization, and it is weaker isolation than a VM: boxes share the
// host's kernel. Doctor and the logs say so whenever it is chosen.
//
// Box uid 0..65535 map to host uids JailUIDBase..+65535, so root in a box is
// an unprivileged user on the host. The box's first process (the guest
// agent, PID 1 of the box's pid namespace) is detached from the server: it
// keeps running when the server exits, and any server on the same home can
// reattach to it through its unix socket. All of the box's mounts live in
// its own mount namespace and vanish with it; nothing is mounted on the host.
package jail

import (
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/jailspec"
	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// Name is the engine's name.
const Name = "jail"

// handleVersion is the version of the state this engine persists.
const handleVersion = 1

// Config configures the engine. Zero fields take defaults.
type Config struct {
	// Home is the boxlite home (to find images). Required.
	Home string
	// PidsMax caps processes per box (default 512).
	PidsMax int
	// Net is the host side of boxes' networks (see package network).
	Net network.Host
	// NoSeccomp disables the seccomp filter (debugging only).
	NoSeccomp bool
	// NoIDMap makes every box copy its image instead of seeing it through
	// an idmapped mount (the fallback for kernels without idmapped mounts;
	// tests use it to cover that path).
	NoIDMap bool
	Logger  *slog.Logger
}

// Engine is the jail engine. It keeps no per-box state in memory: everything
// is in the Handle and the box directory. Safe for concurrent use.
type Engine struct {
	cfg        Config
	log        *slog.Logger
	diskReason string // why boxes get no disk of their own ("" when they do)

	idmapOnce    sync.Once
	idmapProbe   error       // why idmapped image mounts cannot be used; set once
	idmapChecked atomic.Bool // idmapProbe is set
}

// idmapErr says why boxes cannot see images through idmapped mounts (nil:
// they can). The host is probed once, with the first image's agent.
func (e *Engine) idmapErr(agent *os.File) error {
	e.idmapOnce.Do(func() {
		defer e.idmapChecked.Store(true)
		if e.cfg.NoIDMap {
			e.idmapProbe = errors.New("disabled by configuration")
			return
		}
		e.idmapProbe = probeIDMap(agent, filepath.Join(e.cfg.Home, "images"))
		if e.idmapProbe != nil {
			e.log.Warn("idmapped mounts unavailable: every box copies its image", "err", e.idmapProbe)
		}
	})
	return e.idmapProbe
}

// idmapDetail is the doctor line of the idmapped-mount probe's result.
func idmapDetail(err error) string {
	if err != nil {
		return fmt.Sprintf("image files: idmapped mounts unavailable (%v); each box gets its own copy of its image (slower creation, more disk)", err)
	}
	return "image files: read-only idmapped mounts, owned by no box's id range"
}

var _ sandbox.Engine = (*Engine)(nil)

// New returns a jail engine.
func New(cfg Config) *Engine {
	if cfg.PidsMax <= 0 {
		cfg.PidsMax = 512
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{cfg: cfg, log: cfg.Logger.With("component", "jail"), diskReason: diskAvailable()}
}

// Name implements sandbox.Engine.
func (e *Engine) Name() string { return Name }

const isolation = "Linux namespaces + seccomp + cgroups (weaker than a VM: boxes share the host kernel)"

// Available implements sandbox.Engine.
func (e *Engine) Available(ctx context.Context) sandbox.Availability {
	a := sandbox.Availability{Isolation: isolation}
	fail := func(format string, args ...any) sandbox.Availability {
		a.Reason = fmt.Sprintf(format, args...)
		return a
	}
	if os.Geteuid() != 0 {
		return fail("needs root to create namespaces, cgroups and the uid mapping (running as uid %d)", os.Geteuid())
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return fail("user namespaces are disabled (user.max_user_namespaces = 0)")
	}
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return fail("the kernel has no user namespaces")
	}
	a.Details = append(a.Details, "namespaces: user, mount, pid, net, uts, ipc available")
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(b, []byte("overlay")) {
		return fail("the kernel has no overlayfs (modprobe overlay)")
	}
	cg, err := cgroups.Detect()
	if err != nil {
		return fail("%v", err)
	}
	a.Details = append(a.Details, cg.String())
	for _, c := range []string{"memory", "pids"} {
		if !cg.Has(c) {
			return fail("the %s cgroup controller is not available (%s); boxes could exhaust the host", c, cg)
		}
	}
	if !cg.Has("cpu") {
		a.Details = append(a.Details, "cpu controller missing: CPU limits are not enforced")
	}
	a.Details = append(a.Details, network.Available())
	if e.cfg.NoSeccomp {
		a.Details = append(a.Details, "seccomp filter DISABLED")
	}
	if e.diskReason != "" {
		a.Details = append(a.Details, "disk quota: NONE ("+e.diskReason+"): a box can fill the host's disk")
	} else {
		a.Details = append(a.Details, "disk quota: each box's files live on an ext4 image of its disk_mib (loop device)")
	}
	a.Details = append(a.Details, "host ids: each box has its own range of 65536 ids; root in a box is an unprivileged host uid")
	if e.idmapChecked.Load() {
		// Probed once per engine: no need to read the image's manifest
		// again on every create_box.
		a.Details = append(a.Details, idmapDetail(e.idmapProbe))
	} else if img, err := image.Locate(e.cfg.Home, "default"); err != nil {
		a.Details = append(a.Details, "image files: not checked yet (no default image built)")
	} else if agent, err := os.Open(filepath.Join(img.RootfsDir(), image.AgentPath)); err != nil {
		a.Details = append(a.Details, "image files: not checked (the default image has no guest agent)")
	} else {
		a.Details = append(a.Details, idmapDetail(e.idmapErr(agent)))
		agent.Close()
	}
	a.Usable = true
	a.Reason = "namespaces, overlayfs and cgroups usable"
	return a
}

// state is the engine's part of the Handle.
type state struct {
	Proc     proc.ID   `json:"proc"`
	Cgroups  []string  `json:"cgroups,omitempty"` // children first
	CgroupV2 bool      `json:"cgroup_v2,omitempty"`
	Slirp    *proc.ID  `json:"slirp,omitempty"` // boxes started by older versions
	Net      *proc.ID  `json:"net,omitempty"`   // the network helper
	Socket   string    `json:"socket"`
	Started  time.Time `json:"started"`
}

func decodeState(h sandbox.Handle) (state, error) {
	var st state
	if len(h.State) == 0 {
		return st, nil
	}
	if h.Engine != Name || h.Version != handleVersion {
		return st, fmt.Errorf("handle of engine %s v%d is not a jail v%d handle", h.Engine, h.Version, handleVersion)
	}
	err := json.Unmarshal(h.State, &st)
	return st, err
}

func encode(st state) sandbox.Handle {
	b, _ := json.Marshal(st)
	return sandbox.Handle{Version: handleVersion, Engine: Name, State: b}
}

// Start implements sandbox.Engine.
func (e *Engine) Start(ctx context.Context, spec sandbox.Spec) (h sandbox.Handle, err error) {
	t0 := time.Now()
	log := e.log.With("box_id", spec.ID)
	img, err := image.Locate(e.cfg.Home, spec.Image)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "%s", strings.TrimSuffix(err.Error(), ": "+image.ErrNotBuilt.Error()))
	}
	if img.Manifest.JailUIDBase != 0 {
		return h, sandbox.Errorf(sandbox.ErrFailedPrecondition, "image %q is owned by the id range every box shared in older versions; run `boxlite-mcp image build --name %s` to convert it", spec.Image, spec.Image)
	}
	base, err := spec.HostIDBase()
	if err != nil {
		return h, err
	}
	cg, err := cgroups.Detect()
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cgroups unavailable")
	}
	// The box's first process is the image's own guest agent, which sets up
	// the jail itself (--jail-init) and then serves. It runs as the box's
	// uid, which may not search the host directories above the image:
	// exec it through a descriptor.
	agent, err := os.Open(filepath.Join(img.RootfsDir(), image.AgentPath))
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "image %q has no guest agent; rebuild it", spec.Image)
	}
	defer agent.Close()

	// Everything made from here on is undone if Start fails.
	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()

	// The writable layer lives on the box's own disk (its quota) where the
	// host has loop devices; else in the box directory, unlimited.
	layerDir, detachDisk := spec.BoxDir, func() {}
	if err := cloneDisk(ctx, spec); err != nil { // a box made from a snapshot
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot copy the snapshot's disk for the box")
	}
	if e.diskReason == "" {
		if spec.DiskMiB <= 0 {
			spec.DiskMiB = sandbox.DefaultDiskMiB
		}
		if layerDir, detachDisk, err = mountDisk(spec, base); err != nil {
			if errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "No space left") {
				return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "no space left on the server's disk for the box's disk; free space or ask for a smaller disk_mib")
			}
			return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot make or mount the box's disk")
		}
	}
	defer detachDisk() // the overlay keeps its own reference
	dirs := map[string]string{}
	for _, d := range []string{"upper", "work"} {
		p := filepath.Join(layerDir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot create the box's directories")
		}
		dirs[d] = p
	}
	// A writable layer made for another id range (older versions gave
	// every box range 0) moves to this box's range first.
	if n, err := shiftUpper(dirs["upper"], base); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot move the box's files to its id range")
	} else if n > 0 {
		log.Info("moved the box's files to its id range", "files", n, "uid_base", base)
	}
	for _, p := range dirs {
		if err := os.Chown(p, int(base), int(base)); err != nil {
			return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot hand the box's directories to its id range")
		}
	}
	// overlayfs refuses a work dir left over from an unclean stop: clear it.
	os.RemoveAll(filepath.Join(dirs["work"], "work"))

	// The image is seen through an idmapped read-only mount, or copied.
	lower, ns := img.RootfsDir(), (*os.File)(nil)
	if e.idmapErr(agent) == nil {
		if ns, err = userns(agent, base); err != nil {
			return h, sandbox.Wrapf(sandbox.ErrFailedPrecondition, err, "cannot map image %q into the box", spec.Image)
		}
		defer ns.Close()
	} else if lower, err = copiedLower(spec.BoxDir, img.RootfsDir(), base); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot copy image %q for the box", spec.Image)
	}

	os.Remove(spec.Socket)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: spec.Socket, Net: "unix"})
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot create the box's agent socket")
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		return h, err
	}
	defer lf.Close()
	cleanups = append(cleanups, func() { os.Remove(spec.Socket) })

	console, err := os.OpenFile(filepath.Join(spec.BoxDir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "cannot create the box's console log")
	}
	defer console.Close()
	consoleStart, _ := console.Seek(0, 2)
	fmt.Fprintf(console, "--- boxlite jail start %s ---\n", time.Now().UTC().Format(time.RFC3339))

	syncR, syncW, err := os.Pipe()
	if err != nil {
		return h, err
	}
	defer syncR.Close()
	defer syncW.Close()
	// Mount the box's root on the host, where root can reach every layer,
	// at a path the box's uid can walk; the jail's new mount namespace
	// copies it, and the host's copy is detached right after the clone.
	root, err := mountRoot(spec.ID, lower, dirs["upper"], dirs["work"], ns)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot mount the box's root file system")
	}
	cleanups = append(cleanups, func() { unmountRoot(root) })
	defer detachRoot(root)

	cfg := jailspec.Config{
		Root:         root,
		Hostname:     spec.Hostname(),
		Network:      spec.Network,
		Nameserver:   network.GuestConfig().Nameserver.String(),
		TmpSizeMiB:   max(spec.MemoryMiB/2, 64),
		Env:          spec.GuestEnv(),
		Seccomp:      !e.cfg.NoSeccomp,
		WorkCgroupV2: cg.V2,
	}
	cfgJSON, _ := json.Marshal(cfg)

	cmd := exec.Command("/proc/self/fd/"+strconv.Itoa(int(jailspec.FDExe)), "--jail-init")
	cmd.Args[0] = "boxlite-guest"
	cmd.Stdin = bytes.NewReader(cfgJSON)
	cmd.Stdout, cmd.Stderr = console, console
	fds := map[jailspec.FD]*os.File{jailspec.FDListener: lf, jailspec.FDSync: syncR, jailspec.FDExe: agent}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid: true,
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWCGROUP,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: 65536}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: 65536}},
		GidMappingsEnableSetgroups: true,
		// Become root of the new user namespace, i.e. host uid base: the
		// process must not keep host uid 0 as its identity.
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
	}

	// Cgroups first, so the box is limited from its first instruction on.
	cgs, err := createCgroups(cg, spec.ID, limits{MemoryBytes: int64(spec.MemoryMiB) << 20, PidsMax: e.cfg.PidsMax, CPUs: spec.CPUs}, base)
	if err != nil {
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot create the box's cgroups")
	}
	cleanups = append(cleanups, func() { cgroups.Remove(cgs.Dirs) })
	if cgs.Work != "" {
		paths := map[jailspec.FD]string{jailspec.FDWork: cgs.Work}
		if !cg.V2 {
			paths[jailspec.FDWorkBack] = cgs.WorkBack
		}
		for fd, p := range paths {
			flag := os.O_WRONLY
			if cg.V2 {
				flag = os.O_RDONLY // a directory, for CLONE_INTO_CGROUP
			}
			f, err := os.OpenFile(p, flag, 0)
			if err != nil {
				return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot open the box's work cgroup")
			}
			defer f.Close()
			fds[fd] = f
		}
	}
	cmd.ExtraFiles = jailspec.Files(fds)
	if cg.V2 {
		// The cgroup namespace root would be the server's cgroup, outside
		// the box's: v2 delegation needs the box's cgroups inside it.
		cmd.SysProcAttr.Cloneflags &^= syscall.CLONE_NEWCGROUP
	}

	tPrepared := time.Now()
	if err := cmd.Start(); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot start the jail")
	}
	tSpawned := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // owns Wait: reaps the box whenever it ends
	detachRoot(root)                     // the jail has its own copy now
	pid := cmd.Process.Pid
	id, err := proc.Of(pid)
	if err != nil {
		cmd.Process.Kill()
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "the jail process vanished at once")
	}
	cleanups = append(cleanups, func() { id.KillGroup(); id.Wait(5 * time.Second) })
	st := state{Proc: id, Cgroups: cgs.Dirs, CgroupV2: cg.V2, Socket: spec.Socket, Started: time.Now().UTC()}
	log = log.With("pid", pid)

	if err := cgroups.Join(cgs.Join, pid); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "cannot place the jail in its cgroups")
	}
	if spec.Network {
		tNet := time.Now()
		nid, err := e.startNetwork(ctx, spec, pid, filepath.Join(img.RootfsDir(), image.AgentPath))
		if err != nil {
			return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "cannot start the box's network")
		}
		st.Net = &nid
		cleanups = append(cleanups, func() { network.Stop(&nid); network.Release(spec.ID) })
		log.Debug("network up", "helper_pid", nid.PID, "t_network", time.Since(tNet))
	}
	if _, err := syncW.Write([]byte{1}); err != nil {
		return h, sandbox.Wrapf(sandbox.ErrInternal, err, "the jail died before it was told to start")
	}
	h = encode(st)

	if err := sandbox.WaitHello(ctx, e.dialer(spec, h), exited, 20*time.Millisecond, "boxlite-mcp/jail-start"); err != nil {
		tail := consoleTail(filepath.Join(spec.BoxDir, "console.log"), consoleStart, 20)
		log.Warn("jail did not come up", "err", err, "console", tail)
		return h, sandbox.Wrapf(sandbox.ErrUnavailable, err, "the box did not start: %s", firstNonEmpty(lastLine(tail), err.Error()))
	}
	log.Info("jail started", "cgroups", cg.String(), "network", spec.Network, "t_prepare", tPrepared.Sub(t0),
		"t_spawn", tSpawned.Sub(tPrepared), "t_hello", time.Since(tSpawned), "t_total", time.Since(t0))
	return h, nil
}

// Recover implements sandbox.Engine.
func (e *Engine) Recover(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := decodeState(h)
	if err != nil {
		return err
	}
	if !st.Proc.Alive() {
		e.cleanup(spec, st)
		return sandbox.ErrNotRunning
	}
	thawBox(spec.ID, st.CgroupV2) // a server that died during a snapshot left it frozen
	return nil
}

// Wait implements sandbox.Engine.
func (e *Engine) Wait(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := decodeState(h)
	if err != nil {
		return err
	}
	return st.Proc.Exited(ctx)
}

// Dial implements sandbox.Engine.
func (e *Engine) Dial(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "unix", spec.Socket)
}

// dialer binds Dial to one box.
func (e *Engine) dialer(spec sandbox.Spec, h sandbox.Handle) sandbox.Dialer {
	return func(ctx context.Context) (net.Conn, error) { return e.Dial(ctx, spec, h) }
}

// Stop implements sandbox.Engine: the agent's shutdown, then SIGKILL to the
// jail's PID 1 (which takes every process of its pid namespace with it).
func (e *Engine) Stop(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, grace time.Duration) error {
	st, err := decodeState(h)
	if err != nil {
		return err
	}
	if err := sandbox.StopProcess(ctx, st.Proc, e.dialer(spec, h), grace, nil); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return e.cleanup(spec, st)
}

// cleanup releases what a dead jail leaves on the host: cgroups, the
// network helper and the socket. Mounts died with the jail's mount namespace.
func (e *Engine) cleanup(spec sandbox.Spec, st state) error {
	var errs []error
	unmountRoot(mountPoint(spec.ID)) // left only if a server died mid-start
	unmountRoot(mountPoint(spec.ID) + ".disk")
	unmountRoot(mountPoint(spec.ID) + ".lower")
	network.Stop(st.Slirp)
	network.Stop(st.Net)
	if st.Net != nil {
		network.Release(spec.ID)
	}
	if err := cgroups.Remove(st.Cgroups); err != nil {
		errs = append(errs, err)
	}
	if spec.Socket != "" {
		if err := os.Remove(spec.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Destroy implements sandbox.Engine.
func (e *Engine) Destroy(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	var errs []error
	if err := e.Stop(ctx, spec, h, 0); err != nil {
		errs = append(errs, err)
	}
	if spec.BoxDir != "" {
		if err := os.RemoveAll(spec.BoxDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// consoleTail returns the last n lines written to the console log after offset.
func consoleTail(path string, offset int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b[offset:])), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" && !strings.HasPrefix(x, "--- boxlite") {
			return x
		}
	}
	return ""
}
