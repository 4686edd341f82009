//go:build !linux

package confine

import (
	"errors"
	"os"
	"os/exec"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// Process is a started program. Off Linux there are no namespaces or
// cgroups to confine it with: it runs as the server's own user, at once
// (Go does nothing), with its descriptors at the same numbers as on Linux.
type Process struct {
	ID     proc.ID
	Cgroup []string
	Exited <-chan error
	cmd    *exec.Cmd
}

// Supported reports whether programs really run confined on this OS.
const Supported = false

// Start runs the program unconfined (see Process).
func Start(s Spec) (*Process, error) {
	if s.Exe == nil || len(s.Args) == 0 {
		return nil, errors.New("confine: program and arguments are required")
	}
	cmd := exec.Command(s.Exe.Name(), s.Args[1:]...)
	cmd.Args[0] = s.Args[0]
	cmd.Env = s.Env
	if s.Stdin != nil {
		cmd.Stdin = s.Stdin
	}
	if s.Stdout != nil {
		cmd.Stdout = s.Stdout
	}
	if s.Stderr != nil {
		cmd.Stderr = s.Stderr
	}
	// Descriptors 3, 4 and 5 are the Linux stage's; the program's own
	// start at 6 there, so here too.
	cmd.ExtraFiles = append(make([]*os.File, 3), s.Pass...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); close(exited) }()
	id, err := proc.Of(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return &Process{ID: id, Exited: exited, cmd: cmd}, nil
}

// Go does nothing: the program already runs.
func (p *Process) Go() error { return nil }

// Abort kills the program and waits for it.
func (p *Process) Abort() {
	p.cmd.Process.Kill()
	<-p.Exited
}

// Kill does nothing off Linux.
func Kill(name string) {}

// Remove does nothing off Linux.
func Remove(name string) error { return nil }

// Procs lists nothing off Linux.
func Procs(name string) []int { return nil }
