package jail

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

// cgroupRoot is where cgroup hierarchies are mounted (a variable for tests).
var cgroupRoot = "/sys/fs/cgroup"

// cgroupParent is the directory under each hierarchy that holds box cgroups.
const cgroupParent = "boxlite"

// cgroupInfo describes the host's cgroup setup.
type cgroupInfo struct {
	V2          bool
	Controllers []string // usable controllers among memory, pids, cpu
}

// detectCgroups tells v1 from v2 and lists the controllers we can use.
func detectCgroups() (cgroupInfo, error) {
	if b, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		info := cgroupInfo{V2: true}
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
	var info cgroupInfo
	for _, c := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, c, "cgroup.procs")); err == nil {
			info.Controllers = append(info.Controllers, c)
		}
	}
	if len(info.Controllers) == 0 {
		return info, errors.New("no cgroup hierarchy found under " + cgroupRoot)
	}
	return info, nil
}

func (i cgroupInfo) has(c string) bool {
	for _, x := range i.Controllers {
		if x == c {
			return true
		}
	}
	return false
}

func (i cgroupInfo) String() string {
	v := "v1"
	if i.V2 {
		v = "v2"
	}
	return fmt.Sprintf("cgroup %s (%s)", v, strings.Join(i.Controllers, ", "))
}

// limits are the resource limits of one box.
type limits struct {
	MemoryBytes int64
	PidsMax     int
	CPUs        int
}

// createCgroups makes the box's cgroups and sets its limits. It returns the
// directories made (one on v2, one per controller on v1).
func createCgroups(info cgroupInfo, id string, l limits) ([]string, error) {
	type setting struct{ ctrl, file, value string }
	var dirs []string
	var sets []setting
	if info.V2 {
		parent := filepath.Join(cgroupRoot, cgroupParent)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, err
		}
		var enable []string
		for _, c := range info.Controllers {
			enable = append(enable, "+"+c)
		}
		// Controllers must be enabled top-down for the box's cgroup to have them.
		for _, d := range []string{cgroupRoot, parent} {
			if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644); err != nil {
				return nil, fmt.Errorf("enabling controllers in %s: %w", d, err)
			}
		}
		dir := filepath.Join(parent, id)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		dirs = []string{dir}
		sets = []setting{
			{"memory", "memory.max", strconv.FormatInt(l.MemoryBytes, 10)},
			{"memory", "memory.swap.max", "0"},
			{"pids", "pids.max", strconv.Itoa(l.PidsMax)},
			{"cpu", "cpu.max", fmt.Sprintf("%d 100000", l.CPUs*100000)},
		}
	} else {
		for _, c := range info.Controllers {
			dir := filepath.Join(cgroupRoot, c, cgroupParent, id)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				removeCgroups(dirs)
				return nil, err
			}
			dirs = append(dirs, dir)
		}
		sets = []setting{
			{"memory", "memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10)},
			{"memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10)},
			{"pids", "pids.max", strconv.Itoa(l.PidsMax)},
			{"cpu", "cpu.cfs_period_us", "100000"},
			{"cpu", "cpu.cfs_quota_us", strconv.Itoa(l.CPUs * 100000)},
			{"cpu", "cpu.shares", strconv.Itoa(l.CPUs * 1024)},
		}
	}
	for _, s := range sets {
		if !info.has(s.ctrl) {
			continue
		}
		dir := dirs[0]
		if !info.V2 {
			dir = filepath.Join(cgroupRoot, s.ctrl, cgroupParent, id)
		}
		p := filepath.Join(dir, s.file)
		if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
			if errors.Is(err, os.ErrNotExist) && (s.file == "memory.memsw.limit_in_bytes" || s.file == "memory.swap.max") {
				continue // no swap accounting on this host: nothing to limit
			}
			removeCgroups(dirs)
			return nil, fmt.Errorf("setting %s=%s: %w", s.file, s.value, err)
		}
	}
	return dirs, nil
}

// addToCgroups moves pid into every box cgroup.
func addToCgroups(dirs []string, pid int) error {
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("joining %s: %w", d, err)
		}
	}
	return nil
}

// removeCgroups kills anything left in the box's cgroups and removes them.
// Missing directories are fine (idempotent).
func removeCgroups(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		for attempt := 0; ; attempt++ {
			killProcs(d)
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

func killProcs(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// memoryEvents reports how often the box hit its memory limit (OOM kills), if known.
func memoryEvents(dirs []string, v2 bool) (ooms int64) {
	for _, d := range dirs {
		name := "memory.oom_control"
		if v2 {
			name = "memory.events"
		}
		b, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "oom_kill" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				ooms += n
			}
		}
	}
	return ooms
}
