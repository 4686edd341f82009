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

// agentPids is the headroom of the box's pids limit reserved for the guest
// agent: user processes live in a "work" child cgroup limited to PidsMax,
// so a fork bomb cannot starve the agent (a Go program dies when it cannot
// create a thread).
const agentPids = 64

// boxCgroups are the cgroups of one box.
type boxCgroups struct {
	// Dirs are every directory created, children first (removal order).
	Dirs []string `json:"dirs"`
	// Join are the cgroups the box's first process is placed in.
	Join []string `json:"join"`
	// Work is handed to the agent, which starts user processes in it: the
	// work cgroup's directory on v2, its tasks file on v1.
	Work string `json:"work"`
	// WorkBack (v1) is the tasks file of the agent's own pids cgroup.
	WorkBack string `json:"work_back,omitempty"`
}

// createCgroups makes the box's cgroups and sets its limits.
//
//	v1: <ctrl>/boxlite/<id> for memory, pids, cpu (the agent), and
//	    pids/boxlite/<id>/work (user processes)
//	v2: boxlite/<id> (limits), boxlite/<id>/agent, boxlite/<id>/work
func createCgroups(info cgroupInfo, id string, l limits, uidBase uint32) (cg boxCgroups, err error) {
	defer func() {
		if err != nil {
			removeCgroups(cg.Dirs)
		}
	}()
	mk := func(dir string) error {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		cg.Dirs = append([]string{dir}, cg.Dirs...)
		return nil
	}
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
	pidsMax, boxPids := strconv.Itoa(l.PidsMax), strconv.Itoa(l.PidsMax+agentPids)
	mem, cpu := strconv.FormatInt(l.MemoryBytes, 10), l.CPUs*100000
	if info.V2 {
		parent := filepath.Join(cgroupRoot, cgroupParent)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return cg, err
		}
		var enable []string
		for _, c := range info.Controllers {
			enable = append(enable, "+"+c)
		}
		ctl := strings.Join(enable, " ")
		// Controllers are enabled top-down for the box's cgroups to have them.
		for _, d := range []string{cgroupRoot, parent} {
			if err := set(d, "cgroup.subtree_control", ctl, false); err != nil {
				return cg, err
			}
		}
		box := filepath.Join(parent, id)
		if err := mk(box); err != nil {
			return cg, err
		}
		for _, x := range []struct{ ctrl, file, value string }{
			{"memory", "memory.max", mem}, {"memory", "memory.swap.max", "0"}, {"pids", "pids.max", boxPids},
			{"cpu", "cpu.max", fmt.Sprintf("%d 100000", cpu)},
		} {
			if info.has(x.ctrl) {
				if err := set(box, x.file, x.value, x.file == "memory.swap.max"); err != nil {
					return cg, err
				}
			}
		}
		if err := set(box, "cgroup.subtree_control", ctl, false); err != nil {
			return cg, err
		}
		agent, work := filepath.Join(box, "agent"), filepath.Join(box, "work")
		for _, d := range []string{agent, work} {
			if err := mk(d); err != nil {
				return cg, err
			}
		}
		if info.has("pids") {
			if err := set(work, "pids.max", pidsMax, false); err != nil {
				return cg, err
			}
		}
		// Delegation: the agent (the box's uid) moves processes from agent/
		// to work/, which v2 allows only to writers of both procs files and
		// of their common ancestor's.
		for _, f := range []string{box, agent, work} {
			os.Chown(filepath.Join(f, "cgroup.procs"), int(uidBase), int(uidBase))
		}
		cg.Join = []string{agent}
		cg.Work = work
		return cg, nil
	}
	for _, c := range info.Controllers {
		dir := filepath.Join(cgroupRoot, c, cgroupParent, id)
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return cg, err
		}
		if err := mk(dir); err != nil {
			return cg, err
		}
		cg.Join = append(cg.Join, dir)
		switch c {
		case "memory":
			if err := set(dir, "memory.limit_in_bytes", mem, false); err != nil {
				return cg, err
			}
			if err := set(dir, "memory.memsw.limit_in_bytes", mem, true); err != nil {
				return cg, err
			}
		case "cpu":
			for _, x := range [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", strconv.Itoa(cpu)}, {"cpu.shares", strconv.Itoa(l.CPUs * 1024)}} {
				if err := set(dir, x[0], x[1], false); err != nil {
					return cg, err
				}
			}
		case "pids":
			if err := set(dir, "pids.max", boxPids, false); err != nil {
				return cg, err
			}
			work := filepath.Join(dir, "work")
			if err := mk(work); err != nil {
				return cg, err
			}
			if err := set(work, "pids.max", pidsMax, false); err != nil {
				return cg, err
			}
			cg.Work, cg.WorkBack = filepath.Join(work, "tasks"), filepath.Join(dir, "tasks")
		}
	}
	return cg, nil
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
