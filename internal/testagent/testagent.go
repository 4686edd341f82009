// Package testagent builds this tree's guest agent (cmd/boxlite-guest,
// static) once per test process. It imports nothing of ours, so any
// package's tests can use it (internal/testenv wraps it with images).
package testagent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
		// One directory for every test binary, each agent named by the
		// pid of the binary that built it; agents of binaries that ended
		// are removed here, so runs do not pile up copies in /tmp.
		dir, e := agentsDir()
		if e != nil {
			err = e
			return
		}
		os.Chmod(dir, 0o755) // confined helpers' stages run as unprivileged uids
		removeStale(dir)
		path = filepath.Join(dir, "boxlite-guest-"+strconv.Itoa(os.Getpid()))
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

// agentsDir is the shared directory of this user's test agents, or a
// private one when that name is not a directory only this user can
// write (another user made it first: root runs these agents).
func agentsDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "boxlite-test-agents-"+strconv.Itoa(os.Geteuid()))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid != uint32(os.Geteuid()) || fi.Mode().Perm()&0o022 != 0 {
		return os.MkdirTemp("", "boxlite-agent-")
	}
	return dir, nil
}

// removeStale removes the agents of test binaries that no longer run.
func removeStale(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "boxlite-guest-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
