package confine

import (
	"fmt"
	"os"
	"strings"
)

// Confinement is what the host sees of a process's confinement, read from
// /proc/<pid>/status (tests and doctor check it).
type Confinement struct {
	UIDs, GIDs string // real, effective, saved and file-system ids
	CapEff     string
	CapBnd     string
	NoNewPrivs bool
	Seccomp    bool // a seccomp filter is installed (mode 2)
	// PIDNS says the process is in a pid namespace below the host's.
	PIDNS bool
}

// Inspect reads pid's confinement.
func Inspect(pid int) (Confinement, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Confinement{}, err
	}
	var c Confinement
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid":
			c.UIDs = v
		case "Gid":
			c.GIDs = v
		case "CapEff":
			c.CapEff = v
		case "CapBnd":
			c.CapBnd = v
		case "NoNewPrivs":
			c.NoNewPrivs = v == "1"
		case "Seccomp":
			c.Seccomp = v == "2"
		case "NSpid":
			c.PIDNS = len(strings.Fields(v)) > 1
		}
	}
	return c, nil
}

// Check says what is missing for pid to count as confined as uid; nil
// when nothing is.
func (c Confinement) Check(uid uint32) error {
	var miss []string
	want := strings.Repeat(fmt.Sprint(uid)+" ", 4)
	if c.UIDs+" " != want || c.GIDs+" " != want {
		miss = append(miss, fmt.Sprintf("ids uid %q gid %q, want %d", c.UIDs, c.GIDs, uid))
	}
	if c.CapEff != "0000000000000000" || c.CapBnd != "0000000000000000" {
		miss = append(miss, fmt.Sprintf("capabilities effective %s bounding %s", c.CapEff, c.CapBnd))
	}
	if !c.NoNewPrivs {
		miss = append(miss, "no no_new_privs")
	}
	if !c.Seccomp {
		miss = append(miss, "no seccomp filter")
	}
	if !c.PIDNS {
		miss = append(miss, "in the host's pid namespace")
	}
	if len(miss) > 0 {
		return fmt.Errorf("not confined: %s", strings.Join(miss, "; "))
	}
	return nil
}
