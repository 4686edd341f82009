package idshift

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func owner(t *testing.T, p string) (uint32, uint32, os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode()
}

func TestTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	root := t.TempDir()
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, nil, 0o644)
	os.Chown(victim, 7, 7)
	os.MkdirAll(filepath.Join(root, "d"), 0o755)
	os.WriteFile(filepath.Join(root, "d", "suid"), nil, 0o4755)
	unix.Chmod(filepath.Join(root, "d", "suid"), 0o4755)
	os.Symlink(outside, filepath.Join(root, "link"))    // a symlink to a host dir: never followed
	os.Symlink(victim, filepath.Join(root, "filelink")) // nor to a host file
	os.WriteFile(filepath.Join(root, "foreign"), nil, 0o644)
	os.Chown(filepath.Join(root, "foreign"), 5, 5) // below the range: left alone
	base := uint32(1_000_000_000)
	for _, p := range []string{root, filepath.Join(root, "d"), filepath.Join(root, "d", "suid"), filepath.Join(root, "link"), filepath.Join(root, "filelink")} {
		os.Lchown(p, int(base+3), int(base+4))
	}
	unix.Chmod(filepath.Join(root, "d", "suid"), 0o4755)

	n, _, err := Tree(root, base, base+Size)
	if err != nil || n != 5 {
		t.Fatalf("Tree: %d changed, %v; want 5", n, err)
	}
	for _, p := range []string{root, filepath.Join(root, "d", "suid"), filepath.Join(root, "link")} {
		if u, g, _ := owner(t, p); u != base+Size+3 || g != base+Size+4 {
			t.Errorf("%s owned by %d:%d", p, u, g)
		}
	}
	if _, _, m := owner(t, filepath.Join(root, "d", "suid")); m&os.ModeSetuid == 0 {
		t.Errorf("setuid bit lost: %v", m)
	}
	if u, _, _ := owner(t, filepath.Join(root, "foreign")); u != 5 {
		t.Errorf("an id outside the range moved to %d", u)
	}
	if u, _, _ := owner(t, victim); u != 7 {
		t.Errorf("a file behind a symlink was changed: owner %d", u)
	}
	if u, _, _ := owner(t, outside); u == base+Size+3 {
		t.Errorf("a directory behind a symlink was changed")
	}
	// Back to real owners (what the image builder does with legacy images).
	if _, _, err := Tree(root, base+Size, 0); err != nil {
		t.Fatal(err)
	}
	if u, g, _ := owner(t, root); u != 3 || g != 4 {
		t.Errorf("root owned by %d:%d after shifting to 0", u, g)
	}
}
