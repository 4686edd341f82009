// Package cgroups detects the host's cgroup layout (v1 or v2) and makes,
// joins, kills and removes the cgroups boxlite puts boxes and their
// host-side helpers in: <hierarchy>/boxlite/<name>. It is Linux-only in
// effect; elsewhere Detect reports that there are no cgroups.
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Root is where cgroup hierarchies are mounted (a variable for tests).
var Root = "/sys/fs/cgroup"

// Parent is the directory under each hierarchy that holds boxlite's cgroups.
const Parent = "boxlite"

// Info describes the host's cgroup setup.
type Info struct {
	V2          bool
	Controllers []string // usable controllers among memory, pids, cpu
}

// Detect tells v1 from v2 and lists the controllers boxlite uses.
func Detect() (Info, error) {
	if b, err := os.ReadFile(filepath.Join(Root, "cgroup.controllers")); err == nil {
		info := Info{V2: true}
		have := strings.Fields(string(b))
		for _, c := range []string{"memory", "pids", "cpu"} {
			for _, h := range have {
				if h == c {
					info.Controllers = append(info.Controllers, c)
				}
			}
		}
		return info, nil
	}
	var info Info
	for _, c := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat(filepath.Join(Root, c, "cgroup.procs")); err == nil {
			info.Controllers = append(info.Controllers, c)
		}
	}
	if len(info.Controllers) == 0 {
		return info, errors.New("no cgroup hierarchy found under " + Root)
	}
	return info, nil
}

// Has reports whether controller c is usable.
func (i Info) Has(c string) bool {
	for _, x := range i.Controllers {
		if x == c {
			return true
		}
	}
	return false
}

func (i Info) String() string {
	v := "v1"
	if i.V2 {
		v = "v2"
	}
	return fmt.Sprintf("cgroup %s (%s)", v, strings.Join(i.Controllers, ", "))
}

// Dirs are the directories of the cgroup name: one on v2, one per
// controller on v1. They need not exist.
func (i Info) Dirs(name string) []string {
	if i.V2 {
		return []string{filepath.Join(Root, Parent, name)}
	}
	var dirs []string
	for _, c := range i.Controllers {
		dirs = append(dirs, filepath.Join(Root, c, Parent, name))
	}
	return dirs
}

// Limits are the limits of one flat cgroup. Zero fields are not limited.
type Limits struct {
	MemoryBytes int64
	PidsMax     int
	// CPUWeight is the share of CPU time relative to other boxlite cgroups,
	// in CPUs (a box of 2 CPUs weighs twice a box of 1). No hard cap.
	CPUWeight int
}

// Create makes the flat cgroup name with limits l and returns its
// directories. An existing cgroup of that name is reused (its limits set again).
func Create(info Info, name string, l Limits) (dirs []string, err error) {
	if strings.ContainsAny(name, "/\x00") || name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("bad cgroup name %q", name)
	}
	defer func() {
		if err != nil {
			Remove(dirs)
		}
	}()
	set := func(dir, file, value string, optional bool) error {
		err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644)
		if err != nil && optional && errors.Is(err, os.ErrNotExist) {
			return nil // e.g. no swap accounting on this host: nothing to limit
		}
		if err != nil {
			return fmt.Errorf("setting %s=%s: %w", file, value, err)
		}
		return nil
	}
	if info.V2 {
		if err := EnableV2(info); err != nil {
			return nil, err
		}
	}
	for _, dir := range info.Dirs(name) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return dirs, err
		}
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return dirs, err
		}
		dirs = append(dirs, dir)
		ctrl := filepath.Base(filepath.Dir(filepath.Dir(dir))) // v1: the controller's hierarchy
		has := func(c string) bool { return info.V2 && info.Has(c) || ctrl == c }
		if has("memory") && l.MemoryBytes > 0 {
			mem := strconv.FormatInt(l.MemoryBytes, 10)
			if info.V2 {
				if err := set(dir, "memory.max", mem, false); err != nil {
					return dirs, err
				}
				if err := set(dir, "memory.swap.max", "0", true); err != nil {
					return dirs, err
				}
			} else {
				if err := set(dir, "memory.limit_in_bytes", mem, false); err != nil {
					return dirs, err
				}
				if err := set(dir, "memory.memsw.limit_in_bytes", mem, true); err != nil {
					return dirs, err
				}
			}
		}
		if has("pids") && l.PidsMax > 0 {
			if err := set(dir, "pids.max", strconv.Itoa(l.PidsMax), false); err != nil {
				return dirs, err
			}
		}
		if has("cpu") && l.CPUWeight > 0 {
			if info.V2 {
				err = set(dir, "cpu.weight", strconv.Itoa(min(l.CPUWeight*100, 10000)), false)
			} else {
				err = set(dir, "cpu.shares", strconv.Itoa(l.CPUWeight*1024), false)
			}
			if err != nil {
				return dirs, err
			}
		}
	}
	return dirs, nil
}

// EnableV2 enables boxlite's controllers top-down to boxlite's parent
// cgroup, so that cgroups made below it have them.
func EnableV2(info Info) error {
	parent := filepath.Join(Root, Parent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	var enable []string
	for _, c := range info.Controllers {
		enable = append(enable, "+"+c)
	}
	ctl := strings.Join(enable, " ")
	for _, d := range []string{Root, parent} {
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(ctl), 0o644); err != nil {
			return fmt.Errorf("enabling %s in %s: %w", ctl, d, err)
		}
	}
	return nil
}

// Join moves pid into every directory of dirs.
func Join(dirs []string, pid int) error {
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("joining %s: %w", d, err)
		}
	}
	return nil
}

// Procs lists the processes in dir.
func Procs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Kill sends SIGKILL to every process in dir (cgroup.kill on v2 where the
// kernel has it: it also catches processes forking meanwhile).
func Kill(dir string) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644); err == nil {
		return
	}
	for _, pid := range Procs(dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Remove kills anything left in dirs and removes them, children first as
// given. Missing directories are fine (idempotent).
func Remove(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		for attempt := 0; ; attempt++ {
			Kill(d)
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if attempt == 50 { // 50 × 20 ms: processes take a moment to exit
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}
