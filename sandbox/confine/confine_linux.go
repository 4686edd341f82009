package confine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/confinespec"
	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// Supported reports whether programs really run confined on this OS.
const Supported = true

// Process is a started confined program, held at the start line: it runs
// nothing of the program until Go sends its configuration. The caller records its identity (ID,
// Cgroup) first, so that a server dying in between leaves nothing running
// that the next one cannot find: the stage exits when its start pipe
// closes without a byte.
type Process struct {
	ID     proc.ID
	Cgroup []string // the cgroup's directories (see cgroups.Info.Dirs)
	// Exited receives the result of the process's Wait once and is then
	// closed (the launcher reaps it; nobody else may wait for it).
	Exited <-chan error
	cmd    *exec.Cmd
	sync   *os.File
	config []byte
}

// Start spawns the stage for s in its namespaces and cgroup.
func Start(s Spec) (p *Process, err error) {
	if s.UID == 0 {
		return nil, errors.New("confine: refusing to run a program as host root")
	}
	if s.Stage == nil || s.Exe == nil || len(s.Args) == 0 {
		return nil, errors.New("confine: stage, program and arguments are required")
	}
	info, err := cgroups.Detect()
	if err != nil {
		return nil, fmt.Errorf("confine: %w", err)
	}
	for _, c := range []string{"memory", "pids"} {
		if !info.Has(c) {
			return nil, fmt.Errorf("confine: the %s cgroup controller is unavailable", c)
		}
	}
	if err := ensureRootDir(); err != nil {
		return nil, fmt.Errorf("confine: %w", err)
	}
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	var binds []bindSpec
	for _, p := range systemBinds {
		binds = append(binds, bindSpec{src: p, dst: p, optional: true})
	}
	for _, b := range s.Binds {
		binds = append(binds, bindSpec{src: b.Path, dst: filepath.Clean(b.Path), writable: b.Writable})
	}
	for _, d := range append(append([]string{}, baseDevices...), s.Devices...) {
		binds = append(binds, bindSpec{src: d, dst: d, writable: true})
	}
	root := filepath.Join(RootDir, s.Name)
	if err := buildRoot(root, binds); err != nil {
		return nil, fmt.Errorf("confine: building the root: %w", err)
	}
	defer unmountRoot(root) // the program's mount namespace holds its own copy
	cfg := confinespec.Config{Root: root, Args: s.Args, Env: s.Env, Pass: len(s.Pass), Hostname: s.Hostname, Seccomp: !s.NoSeccomp}
	cfgJSON, _ := json.Marshal(cfg)

	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	opened = append(opened, syncR)
	defer func() {
		if err != nil {
			syncW.Close()
		}
	}()
	extra := []*os.File{syncR, s.Exe, s.Stage} // FDSync, FDExe, FDStage
	extra = append(extra, s.Pass...)
	if confinespec.FDSync != 3 || confinespec.FDExe != 4 || confinespec.FDStage != 5 || confinespec.FDFirst != 6 {
		panic("confine: descriptor layout changed")
	}

	dirs, err := cgroups.Create(info, s.Name, s.Limits)
	if err != nil {
		return nil, fmt.Errorf("confine: creating the cgroup: %w", err)
	}
	defer func() {
		if err != nil {
			cgroups.Remove(dirs)
		}
	}()
	uids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(s.UID), Size: 1}}
	gids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(s.UID), Size: 1}}
	var groups []uint32
	for i, g := range s.Groups {
		gids = append(gids, syscall.SysProcIDMap{ContainerID: 1 + i, HostID: int(g), Size: 1})
		groups = append(groups, uint32(1+i))
	}
	// The stage runs through its descriptor: its host path may not be
	// walkable by UID.
	cmd := exec.Command("/proc/self/fd/"+strconv.Itoa(confinespec.FDStage), "--confine")
	cmd.Args[0] = "boxlite-confine"
	if s.Stdin != nil { // a nil *os.File in the interface would not be nil
		cmd.Stdin = s.Stdin
	}
	if s.Stdout != nil {
		cmd.Stdout = s.Stdout
	}
	if s.Stderr != nil {
		cmd.Stderr = s.Stderr
	}
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.ExtraFiles = extra
	flags := uintptr(syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS)
	if !s.HostNetwork {
		flags |= syscall.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:                     true,
		Cloneflags:                 flags,
		UidMappings:                uids,
		GidMappings:                gids,
		GidMappingsEnableSetgroups: len(groups) > 0,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0, Groups: groups, NoSetGroups: len(groups) == 0},
	}
	if s.DieWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if info.V2 {
		// Born in its cgroup (CLONE_INTO_CGROUP): never a moment outside.
		cgf, err := os.Open(dirs[0])
		if err != nil {
			return nil, fmt.Errorf("confine: %w", err)
		}
		opened = append(opened, cgf)
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cgf.Fd())
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("confine: starting: %w", err)
	}
	exited := make(chan error, 1)
	go func() { // owns Wait: reaps the program whenever it ends
		exited <- cmd.Wait()
		close(exited) // later receivers see the end at once
	}()
	p = &Process{Cgroup: dirs, Exited: exited, cmd: cmd, sync: syncW, config: cfgJSON}
	kill := func() {
		cmd.Process.Kill()
		<-exited
	}
	if !info.V2 {
		// v1 has no CLONE_INTO_CGROUP: the stage waits at its start
		// line while it is moved in, and runs nothing before.
		if err := cgroups.Join(dirs, cmd.Process.Pid); err != nil {
			kill()
			return nil, fmt.Errorf("confine: %w", err)
		}
	}
	if p.ID, err = proc.Of(cmd.Process.Pid); err != nil {
		kill()
		return nil, fmt.Errorf("confine: the process vanished as it started: %w", err)
	}
	return p, nil
}

// Go lets the program start (the stage builds its root and executes it).
func (p *Process) Go() error {
	defer p.sync.Close()
	if _, err := p.sync.Write(p.config); err != nil {
		return fmt.Errorf("confine: the process died before it was told to start: %w", err)
	}
	return nil
}

// Abort kills a process that has not been told to Go (or has), waits for
// it and removes its cgroup.
func (p *Process) Abort() {
	p.sync.Close()
	p.cmd.Process.Kill()
	<-p.Exited
	cgroups.Remove(p.Cgroup)
	removeRootDir(filepath.Base(p.Cgroup[0]))
}

// Kill kills every process in the cgroup name, whoever started it (a
// server that died leaves its box's helpers there).
func Kill(name string) {
	info, err := cgroups.Detect()
	if err != nil {
		return
	}
	for _, d := range info.Dirs(name) {
		cgroups.Kill(d)
	}
}

// Remove kills what is left in the cgroup name and removes it.
func Remove(name string) error {
	defer removeRootDir(name)
	info, err := cgroups.Detect()
	if err != nil {
		return nil
	}
	return cgroups.Remove(info.Dirs(name))
}

// Procs lists the processes in the cgroup name.
func Procs(name string) []int {
	info, err := cgroups.Detect()
	if err != nil {
		return nil
	}
	var pids []int
	for _, d := range info.Dirs(name) {
		for _, p := range cgroups.Procs(d) {
			if !slices.Contains(pids, p) {
				pids = append(pids, p)
			}
		}
	}
	return pids
}
