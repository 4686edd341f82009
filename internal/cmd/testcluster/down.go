package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// down stops the cluster under dir and removes everything it left on the
// host. A directory without cluster.json is taken as already down.
func down(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	c, err := loadCluster(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr == nil {
			return fmt.Errorf("%s has no cluster.json: not a test cluster's directory, left alone", dir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	// Daemons in reverse start order: the kubelet first, so nothing
	// restarts the containers killed next; etcd last.
	for i := len(c.Processes) - 1; i >= 0; i-- {
		stop(c.Processes[i])
	}
	shims := killStrays(c)
	for _, s := range shims {
		if err := os.Remove(s); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	// libcni's result cache: this network's entries, and the CRI's
	// loopback network entries of this cluster's pod sandboxes.
	var olds []string
	if c.CNINetwork != "" {
		olds, _ = filepath.Glob(filepath.Join("/var/lib/cni/results", c.CNINetwork+"-*"))
	}
	for _, id := range sandboxIDs(c) {
		olds = append(olds, filepath.Join("/var/lib/cni/results", "cni-loopback-"+id+"-lo"))
	}
	for _, f := range olds {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	// The directories containerd and libcni made for those, once empty
	// (os.Remove leaves a directory another cluster still uses).
	for _, d := range []string{"/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni"} {
		_ = os.Remove(d)
	}
	if err := unmountAll(dir); err != nil {
		errs = append(errs, err)
	}
	if err := removeNetwork(c); err != nil {
		errs = append(errs, err)
	}
	if c.CgroupRoot != "" {
		errs = append(errs, removeCgroups(c.CgroupRoot))
	}
	if err := errors.Join(errs...); err != nil {
		return err // keep DIR (and its record) for another down
	}
	// Never delete through a mount: only remove DIR once nothing is mounted in it.
	if ms, err := mountsUnder(dir); err != nil || len(ms) > 0 {
		return fmt.Errorf("not removing %s: mounts remain %v (%v)", dir, ms, err)
	}
	return os.RemoveAll(dir)
}

// stop ends one daemon and its process group: SIGTERM, then SIGKILL.
func stop(p Process) {
	if !p.Alive() {
		return
	}
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	_ = p.Signal(syscall.SIGTERM)
	if !p.Wait(10 * time.Second) {
		slog.Warn("killing", "name", p.Name, "pid", p.PID)
		_ = p.KillGroup()
		p.Wait(10 * time.Second)
	}
}

// killStrays kills what outlives the daemons: the runc shims of this
// containerd (by their -address), the processes in the kubelet's cgroups,
// and any process whose root or binary lies under DIR. It returns the
// shims' socket paths (containerd 1.6 keeps them in /run/containerd/s).
func killStrays(c *Cluster) []string {
	var sockets []string
	seen := map[string]bool{}
	for round := 0; round < 100; round++ {
		var ids []proc.ID
		zombies := 0
		for _, pid := range allPids() {
			if pid == os.Getpid() {
				continue
			}
			if sock, ok := shimOf(c, pid); ok {
				if !seen[sock] {
					seen[sock] = true
					sockets = append(sockets, sock)
				}
			} else if !inCgroupRoot(pid, c.CgroupRoot) && !rootUnder(pid, c.Dir) {
				continue
			}
			id, err := proc.Of(pid)
			if err != nil {
				continue
			}
			if id.Alive() {
				ids = append(ids, id)
			} else {
				zombies++ // dead, waiting for its reaper (init, once the shim is gone)
			}
		}
		if len(ids) == 0 && zombies == 0 {
			return sockets
		}
		for _, id := range ids {
			_ = id.KillGroup()
		}
		for _, id := range ids {
			id.Wait(2 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	slog.Warn("processes of the cluster survive SIGKILL or are not reaped")
	return sockets
}

// sandboxIDs lists the pod sandboxes containerd's CRI knows in DIR.
func sandboxIDs(c *Cluster) []string {
	var ids []string
	seen := map[string]bool{}
	for _, d := range []string{
		c.path("containerd", "root", "io.containerd.grpc.v1.cri", "sandboxes"),
		c.path("containerd", "state", "io.containerd.grpc.v1.cri", "sandboxes"),
	} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.IsDir() && len(e.Name()) == 64 && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}

func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// shimOf reports whether pid is a containerd shim of this cluster and
// where its socket is: sha256 of "<containerd address>/<namespace>/<id>"
// under /run/containerd/s, as containerd 1.6's shim.SocketAddress makes it.
func shimOf(c *Cluster, pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(b), "containerd-shim") {
		return "", false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	val := func(flag string) string {
		for i, a := range args {
			if a == flag && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	if val("-address") != c.ContainerdSocket {
		return "", false
	}
	sum := sha256.Sum256([]byte(filepath.Join(c.ContainerdSocket, val("-namespace"), val("-id"))))
	return fmt.Sprintf("/run/containerd/s/%x", sum), true
}

// inCgroupRoot reports whether pid sits in a cgroup under root in any hierarchy.
func inCgroupRoot(pid int, root string) bool {
	if root == "" {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && under(parts[2], root) {
			return true
		}
	}
	return false
}

// rootUnder reports whether pid's root or executable lies under dir (a
// container whose cgroup was never made, for one).
func rootUnder(pid int, dir string) bool {
	for _, l := range []string{"root", "exe"} {
		t, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, l))
		if err == nil && under(t, dir) {
			return true
		}
	}
	return false
}

// removeCgroups removes root's cgroups in every hierarchy, deepest first;
// a cgroup whose last process is still exiting is retried for a while.
func removeCgroups(root string) error {
	var left []string
	for try := 0; try < 50; try++ {
		left = left[:0]
		for _, d := range cgroupDirs(root) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				left = append(left, d)
			}
		}
		if len(left) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cgroups left: %v", left)
}
