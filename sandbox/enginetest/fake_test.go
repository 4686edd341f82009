package enginetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

func TestFakeConformance(t *testing.T) {
	w := NewWorld()
	Run(t, Target{
		New: func() sandbox.Engine { return &Fake{W: w} },
		Spec: func(t *testing.T, home, id string) sandbox.Spec {
			dir := filepath.Join(home, "boxes", id)
			os.MkdirAll(dir, 0o700)
			return sandbox.Spec{ID: id, BoxDir: dir, Socket: filepath.Join(home, id+".sock"), CPUs: 1, MemoryMiB: 64}
		},
		// The fake's "box" is the host: keep the file in the box dir.
		PersistPath: func(s sandbox.Spec) string { return filepath.Join(s.BoxDir, "data", "persist.txt") },
	})
}
