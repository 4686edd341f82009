//go:build !linux

package confine

import (
	"errors"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// Process is a started confined program (Linux only).
type Process struct {
	ID     proc.ID
	Cgroup []string
	Exited <-chan error
}

var errUnsupported = errors.New("confine: confined helpers need Linux namespaces")

// Start is unavailable off Linux.
func Start(s Spec) (*Process, error) { return nil, errUnsupported }

// Go is unavailable off Linux.
func (p *Process) Go() error { return errUnsupported }

// Abort does nothing off Linux.
func (p *Process) Abort() {}

// Kill does nothing off Linux.
func Kill(name string) {}

// Remove does nothing off Linux.
func Remove(name string) error { return nil }

// Procs lists nothing off Linux.
func Procs(name string) []int { return nil }
