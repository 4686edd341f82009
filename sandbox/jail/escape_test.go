package jail_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
)

// These tests are the attacks of issue 11 against the jail, replayed: each
// failed on the code before per-box id ranges and descriptor-based start-up.

// hostTrap is a world-writable host directory: before the fix, the jail's
// start-up wrote into it as the box's root through symlinks the box planted.
// It sits directly in the host's /tmp, so every uid can reach it.
func hostTrap(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "boxlite-trap-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o1777)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func entries(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestJailStartFollowsNoBoxSymlink plants a symlink at every path the jail's
// start-up writes or mounts onto, pointing at the host and at the shared
// image, then restarts the box (as the idle stop does silently).
func TestJailStartFollowsNoBoxSymlink(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	ctx := context.Background()
	img, err := image.Locate(home, "default")
	if err != nil {
		t.Fatal(err)
	}
	trap := hostTrap(t)
	rootfs, err := filepath.EvalSymlinks(img.RootfsDir()) // the real path: the test's home is private
	if err != nil {
		t.Fatal(err)
	}
	imageVictim := filepath.Join(rootfs, "etc", "boxlite-escape-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { os.Remove(imageVictim) })

	b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: "planter", Network: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		os.Mkdir(filepath.Join(trap, d), 0o777)
		os.Chmod(filepath.Join(trap, d), 0o1777)
	}
	plant := fmt.Sprintf("set -e\nln -sfn %s/hostname /etc/hostname\nln -sfn %s /etc/resolv.conf\n", trap, imageVictim)
	if o := shIn(t, m, b.ID, plant); o.res.ExitCode != 0 {
		t.Fatalf("planting: %s %s", o.stdout, o.stderr)
	}
	if _, err := m.Stop(ctx, "t", b.ID); err != nil {
		t.Fatal(err)
	}
	// The restart writes /etc/hostname and /etc/resolv.conf.
	if o := shIn(t, m, b.ID, "cat /etc/hostname"); o.stdout != "planter\n" {
		t.Errorf("hostname after restart: %q %q", o.stdout, o.stderr)
	}
	if names := entries(trap); len(names) != 4 {
		t.Errorf("the box's start-up wrote into the host directory %s: %v", trap, names)
	}
	if _, err := os.Lstat(imageVictim); err == nil {
		t.Errorf("the box's start-up created %s in the shared image", imageVictim)
	}
	if _, err := m.Stop(ctx, "t", b.ID); err != nil {
		t.Fatal(err)
	}
	// With the box stopped, replace its mount points by symlinks out of
	// the box, exactly as a box could have left them (rm -rf /tmp and ln -s
	// as root in the box reach the same upper layer).
	upper := filepath.Join(b.Spec.BoxDir, "upper") // boxes without a disk of their own
	unmountDisk := func() {}
	if disk := filepath.Join(b.Spec.BoxDir, "disk.ext4"); fileExists(disk) {
		// The box's files live on its own disk: open it as the next start will.
		mnt := t.TempDir()
		if out, err := exec.Command("mount", "-o", "loop", disk, mnt).CombinedOutput(); err != nil {
			t.Fatalf("mounting the box's disk: %v %s", err, out)
		}
		unmountDisk = func() {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Fatalf("unmounting the box's disk: %v %s", err, out)
			}
		}
		upper = filepath.Join(mnt, "upper")
	}
	base := uint32(sandbox.IDRangeFirst + b.Spec.IDRange*sandbox.IDRangeSize)
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		p := filepath.Join(upper, d)
		os.RemoveAll(p)
		if err := os.Symlink(filepath.Join(trap, d), p); err != nil {
			t.Fatal(err)
		}
		os.Lchown(p, int(base), int(base))
	}
	unmountDisk()
	o := shIn(t, m, b.ID, `cat /etc/hostname; test -c /dev/null && echo devnull; test -f /proc/self/status && echo proc; `+
		`test -L /etc/hostname && echo LINK; echo x > /tmp/f && echo tmp; grep -c '' /proc/self/mountinfo >/dev/null && echo mi`)
	if o.res.ExitCode != 0 {
		t.Fatalf("box after restart: %q %q", o.stdout, o.stderr)
	}
	if got := strings.Fields(o.stdout); strings.Join(got, " ") != "planter devnull proc tmp mi" {
		t.Errorf("box after restart sees %q", o.stdout)
	}
	for _, d := range []string{"", "proc", "sys", "dev", "tmp"} {
		if names := entries(filepath.Join(trap, d)); (d == "" && len(names) != 4) || (d != "" && len(names) != 0) {
			t.Errorf("the box's start-up wrote into the host directory %s/%s: %v", trap, d, names)
		}
	}
	if _, err := os.Lstat(imageVictim); err == nil {
		t.Errorf("the box's start-up created %s in the shared image", imageVictim)
	}
}

// TestJailImageIsNobodysRange: the shared image belongs to no box's id
// range, so a process that escapes a box (it runs as the box's host uid)
// still cannot change what other boxes run.
func TestJailImageIsNobodysRange(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	img, err := image.Locate(home, "default")
	if err != nil {
		t.Fatal(err)
	}
	python := filepath.Join(img.RootfsDir(), "usr/bin/python3")
	target, _ := filepath.EvalSymlinks(python)
	for _, r := range []int{0, 1, 7} {
		uid := sandbox.IDRangeFirst + r*sandbox.IDRangeSize
		for _, victim := range []string{target, filepath.Join(img.RootfsDir(), "etc")} {
			cmd := exec.Command("/bin/sh", "-c", `touch "$1" 2>/dev/null && echo WROTE`, "sh", victim)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			out, _ := cmd.CombinedOutput()
			if strings.Contains(string(out), "WROTE") {
				t.Errorf("host uid %d (root of id range %d) can write %s", uid, r, victim)
			}
		}
	}
}

// TestJailBoxesHaveOwnIDRanges: two boxes map root to different host ids,
// so root of one box cannot signal or write anything of the other.
func TestJailBoxesHaveOwnIDRanges(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	ctx := context.Background()
	var boxes []*sandbox.Box
	for _, n := range []string{"range-a", "range-b"} {
		b, err := m.Create(ctx, "t", sandbox.CreateRequest{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		boxes = append(boxes, b)
	}
	maps := map[string]bool{}
	pids := []string{}
	for _, b := range boxes {
		o := shIn(t, m, b.ID, `cat /proc/self/uid_map; echo $$ > /tmp/pid; sleep 600 & echo $!`)
		line := strings.Fields(strings.TrimSpace(strings.Split(o.stdout, "\n")[0]))
		if len(line) != 3 || line[0] != "0" || line[2] != "65536" {
			t.Fatalf("uid_map of %s: %q", b.Name, o.stdout)
		}
		if maps[line[1]] {
			t.Fatalf("both boxes map root to host uid %s", line[1])
		}
		maps[line[1]] = true
		pids = append(pids, line[1])
	}
	// Root of box A (its host uid) against box B's writable layer.
	uidA, _ := strconv.Atoi(pids[0])
	victim := filepath.Join(boxes[1].Spec.BoxDir, "upper")
	cmd := exec.Command("/bin/sh", "-c", `touch "$1/x" 2>/dev/null && echo WROTE`, "sh", victim)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uidA), Gid: uint32(uidA)}}
	if out, _ := cmd.CombinedOutput(); strings.Contains(string(out), "WROTE") {
		t.Errorf("root of box A (host uid %d) wrote into box B's files", uidA)
	}
	// And against box B's processes: its agent's host pid.
	bPid := boxProcess(t, boxes[1])
	cmd = exec.Command("/bin/sh", "-c", `kill -0 "$1" 2>/dev/null && echo SIGNALLED`, "sh", strconv.Itoa(bPid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uidA), Gid: uint32(uidA)}}
	if out, _ := cmd.CombinedOutput(); strings.Contains(string(out), "SIGNALLED") {
		t.Errorf("root of box A (host uid %d) can signal box B's agent (pid %d)", uidA, bPid)
	}
}

// boxProcess returns the host pid of a box's agent, from its handle.
func boxProcess(t *testing.T, b *sandbox.Box) int {
	t.Helper()
	st, err := os.ReadFile(filepath.Join(b.Spec.BoxDir, "engine.json"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(st), `"pid":`)
	if i < 0 {
		t.Fatalf("no pid in %s", st)
	}
	var pid int
	fmt.Sscanf(string(st)[i+len(`"pid":`):], "%d", &pid)
	return pid
}

// TestJailMountinfoHidesHostPaths: a box's mountinfo names neither the
// boxlite home nor the image directory.
func TestJailMountinfoHidesHostPaths(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	b, err := m.Create(context.Background(), "t", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	o := shIn(t, m, b.ID, "cat /proc/self/mountinfo")
	for _, leak := range []string{home, b.ID, "/images/", "/boxes/"} {
		if strings.Contains(o.stdout, leak) {
			t.Errorf("mountinfo shows %q:\n%s", leak, o.stdout)
		}
	}
}

// TestJailCopiedImageFallback: where idmapped mounts are unavailable, each
// box gets its own copy of the image in its range; the shared image stays
// untouched and the box works.
func TestJailCopiedImageFallback(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	eng := jail.New(jail.Config{Home: home, NoIDMap: true, Logger: slog.New(slog.NewTextHandler(tw{t}, nil))})
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}, Logger: slog.New(slog.NewTextHandler(tw{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	destroyAll(t, m)
	b, err := m.Create(context.Background(), "t", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	o := shIn(t, m, b.ID, `python3 -c 'print(6*7)'; stat -c %u /usr/bin; touch /usr/bin/mine && echo ok`)
	if strings.Join(strings.Fields(o.stdout), " ") != "42 0 ok" {
		t.Fatalf("box on a copied image: %q %q", o.stdout, o.stderr)
	}
	if _, err := os.Stat(filepath.Join(b.Spec.BoxDir, "lower", "usr", "bin")); err != nil {
		t.Fatalf("no per-box copy: %v", err)
	}
	img, _ := image.Locate(home, "default")
	if _, err := os.Stat(filepath.Join(img.RootfsDir(), "usr/bin/mine")); err == nil {
		t.Fatal("the box's write reached the shared image")
	}
}

// TestJailDiskQuota: a box fills its own disk (disk_mib), gets ENOSPC,
// leaves the host's disk alone, and works again after deleting files.
func TestJailDiskQuota(t *testing.T) {
	testenv.RequireRoot(t)
	home := testenv.Home(t)
	m := server(t, home)
	destroyAll(t, m)
	b, err := m.Create(context.Background(), "t", sandbox.CreateRequest{DiskMiB: 300})
	if err != nil {
		t.Fatal(err)
	}
	var before, after unix.Statfs_t
	unix.Statfs(b.Spec.BoxDir, &before)
	o := shIn(t, m, b.ID, `dd if=/dev/zero of=/root/fill bs=1M count=400 2>&1; echo "dd=$?"; df -m / | tail -1`)
	if !strings.Contains(o.stdout, "No space left on device") || !strings.Contains(o.stdout, "dd=1") {
		t.Fatalf("filling a 300 MiB disk with 400 MiB: %q %q", o.stdout, o.stderr)
	}
	unix.Statfs(b.Spec.BoxDir, &after)
	if used := int64(before.Bfree-after.Bfree) * before.Bsize >> 20; used > 350 {
		t.Fatalf("the host's disk lost %d MiB to a 300 MiB box", used)
	}
	if o := shIn(t, m, b.ID, `rm /root/fill && echo again > /root/x && cat /root/x`); o.stdout != "again\n" {
		t.Fatalf("after freeing: %q %q", o.stdout, o.stderr)
	}
	// The quota survives a restart (the disk is the box's, not the session's).
	if _, err := m.Stop(context.Background(), "t", b.ID); err != nil {
		t.Fatal(err)
	}
	if o := shIn(t, m, b.ID, `cat /root/x; dd if=/dev/zero of=/root/fill bs=1M count=400 2>/dev/null; echo "dd=$?"`); o.stdout != "again\ndd=1\n" {
		t.Fatalf("after a restart: %q %q", o.stdout, o.stderr)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
