package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
)

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
func createCgroups(info cgroups.Info, id string, l limits, uidBase uint32) (cg boxCgroups, err error) {
	defer func() {
		if err != nil {
			cgroups.Remove(cg.Dirs)
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
		parent := filepath.Join(cgroups.Root, cgroups.Parent)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return cg, err
		}
		var enable []string
		for _, c := range info.Controllers {
			enable = append(enable, "+"+c)
		}
		ctl := strings.Join(enable, " ")
		// Controllers are enabled top-down for the box's cgroups to have them.
		for _, d := range []string{cgroups.Root, parent} {
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
			if info.Has(x.ctrl) {
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
		if info.Has("pids") {
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
		dir := filepath.Join(cgroups.Root, c, cgroups.Parent, id)
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
