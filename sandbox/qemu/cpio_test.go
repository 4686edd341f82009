package qemu

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCpioExtractsWithGNUCpio checks the archive against a real reader.
func TestCpioExtractsWithGNUCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	w := &cpioWriter{w: &buf}
	w.Dir("lib", 0o755)
	w.Dir("lib/modules", 0o755)
	w.File("init", 0o755, []byte("#!/bin/sh\necho hi\n"))
	w.File("lib/modules/a.ko", 0o644, []byte{0, 1, 2, 3, 4})
	w.File("empty", 0o600, nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("archive length %d not 4-aligned", buf.Len())
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-idm", "--quiet")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	for name, want := range map[string]string{"init": "#!/bin/sh\necho hi\n", "lib/modules/a.ko": "\x00\x01\x02\x03\x04", "empty": ""} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v", name, got, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "init")); fi.Mode().Perm() != 0o755 {
		t.Errorf("init mode %v", fi.Mode())
	}
}
