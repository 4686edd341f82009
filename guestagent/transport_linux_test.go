package guestagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A Kubernetes box's agent listens on TCP: it has no authentication of its
// own, so an address the pod network reaches must be refused.
func TestListenTCPLoopbackOnly(t *testing.T) {
	for _, bad := range []string{"tcp:0.0.0.0:0", "tcp::0", "tcp:[::]:0", "tcp:10.0.0.1:7071", "tcp:localhost:0", "tcp:nonsense"} {
		if l, err := Listen(bad); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded; want a refusal", bad)
		}
	}
	l, err := Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func TestInstallSelf(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "boxlite-guest")
	if err := InstallSelf(dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	self, _ := os.Stat("/proc/self/exe")
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Size() != self.Size() {
		t.Fatalf("installed copy: %v %v (want 0755, %d bytes)", fi, err, self.Size())
	}
	if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 1 || strings.HasPrefix(ents[0].Name(), ".") {
		t.Errorf("temporary files left: %v", ents)
	}
}
