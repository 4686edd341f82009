package krun

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReadExitRecordHostile: the exit record lies in the shim's directory,
// which the shim's uid controls. What it plants there must not make the
// server (root) read another file, block, or read without bound.
func TestReadExitRecordHostile(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.json")
	os.WriteFile(secret, []byte(`{"reason":"host secret","code":7}`), 0o600)
	tests := []struct {
		name  string
		plant func(path string) error
		want  string
	}{
		{"record", func(p string) error { return os.WriteFile(p, []byte(`{"reason":"krun_x failed: -1","code":1}`), 0o600) }, "krun_x failed: -1"},
		{"symlink to a host file", func(p string) error { return os.Symlink(secret, p) }, ""},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }, ""},
		{"huge", func(p string) error {
			return os.WriteFile(p, []byte(`{"reason":"`+strings.Repeat("x", 2*maxExitRecord)+`"}`), 0o600)
		}, ""},
		{"missing", func(string) error { return nil }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tt.plant(filepath.Join(dir, exitName)); err != nil {
				t.Fatal(err)
			}
			if got := readExitRecord(dir).Reason; got != tt.want {
				t.Errorf("reason %.40q, want %q", got, tt.want)
			}
		})
	}
}

// TestVMMDirFitsSunPath: the agent's socket path always fits sun_path,
// however long the box directory.
func TestVMMDirFitsSunPath(t *testing.T) {
	for _, boxDir := range []string{"/h/boxes/x", "/" + strings.Repeat("d", 200) + "/boxes/x"} {
		spec := sandboxSpec(boxDir, "/run/b/01abc.sock")
		if p := agentSocket(spec); len(p) >= 108 {
			t.Errorf("box dir %.20s…: socket %q is %d bytes", boxDir, p, len(p))
		}
	}
}
