package inroot

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// setup returns a root directory (and its descriptor) holding the traps a
// box can plant, and an "outside" directory standing for the host.
func setup(t *testing.T) (root string, rootfd int, outside string) {
	t.Helper()
	root, outside = t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink(filepath.Join(outside, "hostname"), filepath.Join(root, "etc", "hostname")) // absolute, to the host
	os.Symlink("../../../../../../.."+outside+"/resolv", filepath.Join(root, "etc", "resolv.conf"))
	os.Symlink(outside, filepath.Join(root, "proc"))          // a mount target pointing out
	os.Symlink("etc", filepath.Join(root, "tmp"))             // a mount target pointing elsewhere inside
	os.WriteFile(filepath.Join(root, "sys"), nil, 0o644)      // a file where a directory belongs
	os.Symlink("/proc/self/root", filepath.Join(root, "mag")) // a magic link
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return root, fd, outside
}

func TestWriteFileReplacesSymlinks(t *testing.T) {
	root, rootfd, outside := setup(t)
	etc, err := Open(rootfd, "etc", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(etc)
	for _, name := range []string{"hostname", "resolv.conf"} {
		if err := WriteFile(etc, name, []byte("box\n"), 0o644); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fi, err := os.Lstat(filepath.Join(root, "etc", name))
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s is %v (%v), want a regular file", name, fi.Mode(), err)
		}
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 {
		t.Fatalf("the host directory has %d entries, want only its own secret: %v", len(ents), ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "etc")); len(ents) != 2 {
		t.Fatalf("temporary files left in etc: %v", ents)
	}
}

func TestEnsureDirNeverLandsOutside(t *testing.T) {
	root, rootfd, outside := setup(t)
	for _, name := range []string{"proc", "tmp", "sys", "dev", "mag"} {
		fd, err := EnsureDir(rootfd, name, 0o755)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var st, want unix.Stat_t
		unix.Fstat(fd, &st)
		unix.Close(fd)
		if err := unix.Lstat(filepath.Join(root, name), &want); err != nil || st.Ino != want.Ino || want.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Fatalf("%s: descriptor is not the directory %s/%s (%v)", name, root, name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "secret")); err != nil {
		t.Fatalf("host file gone: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc")); err != nil || !fi.IsDir() {
		t.Fatalf("replacing the tmp symlink touched its target: %v", err)
	}
}

func TestOpenRefusesEscapes(t *testing.T) {
	_, rootfd, _ := setup(t)
	for _, p := range []string{"etc/hostname", "proc", "proc/secret", "../x", "etc/../../x", "mag", "/etc", "etc\x00x"} {
		if fd, err := Open(rootfd, p, unix.O_RDONLY, 0); err == nil {
			unix.Close(fd)
			t.Errorf("Open(%q) succeeded", p)
		}
	}
	if fd, err := Open(rootfd, "etc", unix.O_PATH|unix.O_DIRECTORY, 0); err != nil {
		t.Errorf("Open(etc): %v", err)
	} else {
		unix.Close(fd)
	}
}

func TestEnsureFileRefusesSymlinks(t *testing.T) {
	root, rootfd, outside := setup(t)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "null"))
	if fd, err := EnsureFile(rootfd, "null", 0o666); err == nil {
		unix.Close(fd)
		t.Fatal("EnsureFile followed a symlink")
	}
	fd, err := EnsureFile(rootfd, "zero", 0o666)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	for _, name := range []string{"../x", "a/b", "..", ""} {
		if err := WriteFile(rootfd, name, nil, 0o644); err == nil {
			t.Errorf("WriteFile(%q) accepted a name that is not one component", name)
		}
	}
}
