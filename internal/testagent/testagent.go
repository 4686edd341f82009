// Package testagent builds this tree's guest agent (cmd/boxlite-guest,
// static) once per test process. It imports nothing of ours, so any
// package's tests can use it (internal/testenv wraps it with images).
package testagent

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	once sync.Once
	path string
	err  error
)

// repoRoot is the repository's top directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Path builds the agent the first time and returns its path.
func Path(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, e := os.MkdirTemp("", "boxlite-agent-")
		if e != nil {
			err = e
			return
		}
		os.Chmod(dir, 0o755) // confined helpers' stages run as unprivileged uids
		path = filepath.Join(dir, "boxlite-guest")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", path, "./cmd/boxlite-guest")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, e := cmd.CombinedOutput(); e != nil {
			err = &buildError{err: e, out: string(out)}
		}
	})
	if err != nil {
		t.Fatalf("building the guest agent: %v", err)
	}
	return path
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
