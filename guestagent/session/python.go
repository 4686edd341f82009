package session

import (
	"context"
	_ "embed"
	"errors"
	"strings"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// driverPy runs the code of a Python session in IPython's InteractiveShell
// (see the file). Debian's python3-ipython has what it needs; matplotlib's
// inline backend comes with python3-matplotlib-inline (a dependency of
// python3-ipykernel).
//
//go:embed driver.py
var driverPy string

var errNoIPython = errors.New("IPython is not installed in this box's image (Debian: python3-ipython, or python3-ipykernel): rebuild the image (boxlite-mcp image build) or run with fresh: true")

func startPython(ctx context.Context, m *Manager, k key, env []string, cwd string, cred *syscall.Credential) (interp, error) {
	d, err := startDriver(ctx, m, "Python", []string{m.cfg.Python, "-c", driverPy}, env, cwd, cred)
	if err != nil {
		if t := lastTail(err); strings.Contains(t, "No module named") && (strings.Contains(t, "IPython") || strings.Contains(t, "traitlets")) {
			return nil, wire.Errorf(wire.CodeNotFound, "%v", errNoIPython)
		}
		return nil, err
	}
	return d, nil
}
