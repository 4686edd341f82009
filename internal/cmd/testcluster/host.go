package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// helper returns a command of up or down that dies with the process that
// started it: a killed up must not leave a ctr or ip behind that holds the
// cluster's directory or socket after down (down kills only the daemons it
// recorded).
func helper(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// ipCmd runs iproute2's ip.
func ipCmd(args ...string) error {
	out, err := helper(context.Background(), "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// claimSlot creates the node link of the first free slot: creating the
// link is the atomic claim, so two ups never share a slot. The node link
// is a bridge without ports: some kernels here have no dummy driver, and
// an empty bridge does the same job (a local address nothing routes to).
func claimSlot(c *Cluster) error {
	for n := 10; n < 250; n++ {
		probe := newCluster(c.Dir)
		probe.setSlot(n)
		if linkExists(probe.Bridge) || linkExists(probe.Dummy) {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", probe.CgroupRoot)); err == nil {
			continue
		}
		if err := ipCmd("link", "add", probe.Dummy, "type", "bridge"); err != nil {
			if linkExists(probe.Dummy) {
				continue // another up won the race
			}
			return err
		}
		c.setSlot(n)
		return nil
	}
	return errors.New("no free slot for a test cluster (250 in use?)")
}

// setupNetwork gives the dummy the node IP and creates the pods' bridge
// with the first address of the pod range (pods reach the host and each
// other on the bridge; nothing is forwarded or masqueraded).
func setupNetwork(c *Cluster) error {
	gw := strings.TrimSuffix(c.PodCIDR, "0/24") + "1/24"
	steps := [][]string{
		{"addr", "add", c.NodeIP + "/32", "dev", c.Dummy},
		{"link", "set", c.Dummy, "up"},
		{"link", "add", c.Bridge, "type", "bridge"},
		{"addr", "add", gw, "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

// removeNetwork deletes the bridge (and veths still on it) and the dummy.
func removeNetwork(c *Cluster) error {
	var errs []error
	if c.Bridge != "" && linkExists(c.Bridge) {
		ents, _ := os.ReadDir("/sys/class/net/" + c.Bridge + "/brif")
		for _, e := range ents {
			errs = append(errs, delLink(e.Name())) // a veth whose netns just went goes by itself
		}
		errs = append(errs, delLink(c.Bridge))
	}
	if c.Dummy != "" {
		errs = append(errs, delLink(c.Dummy))
	}
	return errors.Join(errs...)
}

// delLink deletes a link; one that is (or just went) away is not an error.
func delLink(name string) error {
	if err := ipCmd("link", "del", name); err != nil && linkExists(name) {
		return err
	}
	return nil
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	point, fstype string
}

func mounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		out = append(out, mountInfo{point: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if under(m.point, dir) {
			out = append(out, m.point)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unmountAll detaches every mount at or under dir (containerd snapshots,
// kubelet volumes, network namespaces, DIR's own shared bind mount).
func unmountAll(dir string) error {
	for round := 0; round < 5; round++ {
		ps, err := mountsUnder(dir)
		if err != nil || len(ps) == 0 {
			return err
		}
		for _, p := range ps {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	ps, err := mountsUnder(dir)
	if err == nil && len(ps) > 0 {
		err = fmt.Errorf("mounts left under %s: %v", dir, ps)
	}
	return err
}

// makeShared bind-mounts dir on itself as a shared mount, so mounts the
// kubelet makes in its own mount namespace reach containerd, and back.
func makeShared(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// cgroupMounts lists the mount points of every cgroup hierarchy.
func cgroupMounts() ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// createCgroupRoot makes the kubelet's cgroup root in every hierarchy (the
// kubelet refuses a root that does not exist); cpuset gets its parent's
// cpus and mems, or nothing could run in it.
func createCgroupRoot(root string) error {
	hs, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, root)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(d, f), err)
			}
		}
	}
	return nil
}

// cgroupDirs lists root's cgroups in every hierarchy, deepest first.
func cgroupDirs(root string) []string {
	hs, _ := cgroupMounts()
	var out []string
	for _, h := range hs {
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// sysctlMasks are the kernel settings the kubelet insists on (it rewrites
// them host-wide, panic_on_oops among them, unless they already match):
// the kubelet runs in a mount namespace where files with these values
// cover the real ones, and the host keeps its own.
var sysctlMasks = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// kubeletNS is the hidden subcommand "kubelet-ns MASKDIR KUBELET ARGS...":
// a new mount namespace (DIR stays shared with the host), /proc made
// private in it, the masks mounted, then exec of the kubelet.
func kubeletNS(args []string) error {
	if len(args) < 2 {
		return errors.New("kubelet-ns MASKDIR KUBELET [ARGS...]")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/proc", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make /proc private: %w", err)
	}
	for name, want := range sysctlMasks {
		real := "/proc/sys/" + name
		cur, err := os.ReadFile(real)
		if err != nil || strings.TrimSpace(string(cur)) == want {
			continue
		}
		mask := filepath.Join(args[0], strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(mask, []byte(want+"\n"), 0o444); err != nil {
			return err
		}
		if err := unix.Mount(mask, real, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask %s: %w", real, err)
		}
	}
	return unix.Exec(args[1], args[1:], os.Environ())
}
