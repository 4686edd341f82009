package enginetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// FakeDisk is the file in a fake box's directory that stands for its disk:
// snapshots copy it, and boxes made from a snapshot start with the copy.
const FakeDisk = "disk"

// SnapshotConfig configures the fake engine's snapshots.
type SnapshotConfig struct {
	// Fail, when set, makes Snapshot fail with it after writing a file.
	Fail error
	// Backed makes clones report that they read the snapshot's files.
	Backed bool
	// Hook, when set, runs inside Snapshot after the file is written.
	Hook func(dir string)
}

var _ sandbox.Snapshotter = (*Fake)(nil)

// Snapshot implements sandbox.Snapshotter: it copies FakeDisk.
func (f *Fake) Snapshot(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, dir string) (bool, error) {
	if !f.alive(spec.ID, h) {
		return false, errors.New("fake box is not running")
	}
	b, err := os.ReadFile(filepath.Join(spec.BoxDir, FakeDisk))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(dir, FakeDisk), b, 0o600); err != nil {
		return false, err
	}
	if hook := f.W.Snapshots.Hook; hook != nil {
		hook(dir)
	}
	return false, f.W.Snapshots.Fail
}

// ClonesShareFiles implements sandbox.Snapshotter.
func (f *Fake) ClonesShareFiles() bool { return f.W.Snapshots.Backed }

// cloneDisk gives a box made from a snapshot the snapshot's disk at its first start.
func (f *Fake) cloneDisk(spec sandbox.Spec) error {
	if spec.FromSnapshot == nil {
		return nil
	}
	disk := filepath.Join(spec.BoxDir, FakeDisk)
	if _, err := os.Stat(disk); err == nil {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(spec.FromSnapshot.Dir, FakeDisk))
	if err != nil {
		return err
	}
	return os.WriteFile(disk, b, 0o600)
}
