package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
)

// fakeImages resolves references to one image with a config.
type fakeImages struct {
	img  sandbox.ResolvedImage
	refs []string
}

func (f *fakeImages) Resolve(_ context.Context, ref string, progress func(sandbox.ImageProgress)) (*sandbox.ResolvedImage, error) {
	f.refs = append(f.refs, ref)
	if ref == "missing:1" {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "image missing:1 was not found on its registry")
	}
	if progress != nil {
		progress(sandbox.ImageProgress{Done: 1, Total: 2, Message: "downloading"})
	}
	r := f.img
	return &r, nil
}

// TestImageConfigApplies: a box from an image with a config gets its env
// (under the box's own), its working directory and its user as the
// defaults of runs and written files; a run's own cwd and user win.
func TestImageConfigApplies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (runs as another uid)")
	}
	e := newEnv(t)
	wd, err := os.MkdirTemp("", "boxlite-wd-") // t.TempDir's parent is closed to other users
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wd) })
	os.Chmod(wd, 0o777)
	uid, gid := uint32(65534), uint32(65533)
	imgs := &fakeImages{img: sandbox.ResolvedImage{Name: "py-3", Env: []string{"A=image", "B=image"}, WorkDir: wd, UID: &uid, GID: &gid}}
	m := e.managerWith(func(c *sandbox.Config) { c.Images = imgs })
	ctx := context.Background()
	var got []sandbox.ImageProgress
	b, err := m.Create(ctx, "o", sandbox.CreateRequest{Image: "registry.example/py:3", Env: map[string]string{"B": "box"},
		Progress: func(p sandbox.ImageProgress) { got = append(got, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if b.Image != "py-3" || b.Spec.Env["A"] != "image" || b.Spec.Env["B"] != "box" || b.Spec.WorkDir != wd {
		t.Errorf("box %+v spec %+v", b, b.Spec)
	}
	if len(got) != 1 || imgs.refs[0] != "registry.example/py:3" {
		t.Errorf("progress %v refs %v", got, imgs.refs)
	}
	var out bytes.Buffer
	if _, _, err := m.Exec(ctx, "o", b.ID, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", "pwd; id -u; id -g"}},
		sandbox.ExecIO{Stdout: &out, Stderr: &out}); err != nil || out.String() != wd+"\n65534\n65533\n" {
		t.Errorf("defaults: %q %v", out.String(), err)
	}
	out.Reset()
	root := uint32(0)
	if _, _, err := m.Exec(ctx, "o", b.ID, sandbox.ExecRequest{Argv: []string{"sh", "-c", "pwd; id -u"}, Cwd: "/", UID: &root, GID: &root},
		sandbox.ExecIO{Stdout: &out}); err != nil || out.String() != "/\n0\n" {
		t.Errorf("explicit cwd and user: %q %v", out.String(), err)
	}
	p := filepath.Join(wd, "written")
	if _, _, err := m.WriteFile(ctx, "o", b.ID, sandbox.WriteFileRequest{Path: p, Size: 2}, strings.NewReader("hi")); err != nil {
		t.Fatal(err)
	}
	if st := lstatOwner(t, p); st != [2]uint32{65534, 65533} {
		t.Errorf("written file owned by %v", st)
	}
	if _, err := m.Create(ctx, "o", sandbox.CreateRequest{Image: "missing:1"}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("missing image: %v", err)
	}
	// A box of an image without a config runs in /root as root, as before.
	imgs.img = sandbox.ResolvedImage{Name: "plain"}
	b2 := mustCreate(t, m, "o", sandbox.CreateRequest{Image: "plain"})
	if b2.Spec.WorkDir != "" || b2.Spec.UID != nil {
		t.Errorf("plain spec %+v", b2.Spec)
	}
}

// managerWith is env.manager with a config change.
func (e *env) managerWith(mod func(*sandbox.Config)) *sandbox.Manager {
	e.t.Helper()
	st, err := persist.Open(context.Background(), filepath.Join(e.home, "boxlite.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := sandbox.Config{Home: e.home, Store: st, Engines: []sandbox.Engine{&enginetest.Fake{W: e.world}},
		Now: func() time.Time { return time.UnixMilli(e.now.Load()) }, BootID: func() (string, error) { return e.boot.Load().(string), nil },
		Logger: slog.New(slog.NewTextHandler(tWriter{e.t}, nil))}
	mod(&cfg)
	m, err := sandbox.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Close(); st.Close() })
	return m
}

func lstatOwner(t *testing.T, p string) [2]uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return [2]uint32{st.Uid, st.Gid}
}
