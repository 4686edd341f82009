package oci_test

// Boxes from pulled images, on the real engines: a root file system of an
// ordinary OCI image (the default image's tree, served by a loopback
// registry without the agent), its config applied, and an image without
// Python that still runs commands and says what run_code lacks.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/internal/ocitest"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image/oci"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

var (
	imagesOnce sync.Once
	imagesErr  error
	imagesDir  string // boxImages' scratch directory, removed by TestMain
	pyImg      v1.Image
	noPyImg    v1.Image
	baseLayer  v1.Layer
)

// baseImage is a built default image whose tree stands for an ordinary
// distribution image: the cached one as it is (no agent refresh or
// rebuild is needed for its content), else a fresh build.
func baseImage(t testing.TB) *image.Image {
	if img, err := image.Locate(testenv.CacheHome(), sandbox.DefaultImage); err == nil {
		return img
	}
	return testenv.Image(t)
}

// TestMain removes boxImages' layer file (over a gigabyte) once every test
// of the binary is done with it.
func TestMain(m *testing.M) {
	code := m.Run()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

// boxImages builds the two test images once per test binary: the default
// image's root file system as one layer (about 250 MB).
func boxImages(t testing.TB) (py, nopy v1.Image) {
	t.Helper()
	img := baseImage(t)
	imagesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oci-test-")
		if err != nil {
			imagesErr = err
			return
		}
		imagesDir = dir
		if baseLayer, imagesErr = ocitest.DirLayer(img.RootfsDir(), filepath.Join(dir, "base.tar"), false); imagesErr != nil {
			return
		}
		pyImg, noPyImg, imagesErr = ocitest.BoxImages(baseLayer, img.RootfsDir())
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return pyImg, noPyImg
}

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// world is a fresh home with a registry serving the test images and a
// manager on engine.
type world struct {
	home       string
	ref, noref string
	m          *sandbox.Manager
}

func newWorld(t *testing.T, boot string, engine func(home string, log *slog.Logger) sandbox.Engine) *world {
	t.Helper()
	testenv.RequireRoot(t)
	py, nopy := boxImages(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := ocitest.Serve(l)
	t.Cleanup(func() { reg.Close() })
	w := &world{home: t.TempDir()}
	if w.ref, err = reg.Push("test/python:1", py); err != nil {
		t.Fatal(err)
	}
	if w.noref, err = reg.Push("test/nopython:1", nopy); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(tw{t}, nil))
	st, err := persist.Open(context.Background(), filepath.Join(w.home, "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := oci.New(oci.Config{Home: w.home, Agent: testenv.Agent(t), AgentVersion: guestagent.Version,
		BootImage: boot, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	w.m, err = sandbox.New(sandbox.Config{Home: w.home, Store: st, Engines: []sandbox.Engine{engine(w.home, log)}, Images: src, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		boxes, _ := w.m.List(context.Background(), "t", "")
		for _, b := range boxes {
			w.m.Destroy(context.Background(), "t", b.ID)
		}
		w.m.Close()
		st.Close()
	})
	return w
}

func (w *world) run(t *testing.T, box string, argv ...string) (string, *sandbox.ExecResult, error) {
	t.Helper()
	var out bytes.Buffer
	res, _, err := w.m.Exec(context.Background(), "t", box, sandbox.ExecRequest{Argv: argv, TimeoutMs: 120_000}, sandbox.ExecIO{Stdout: &out, Stderr: &out})
	return out.String(), res, err
}

func (w *world) create(t *testing.T, ref string) *sandbox.Box {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := w.m.Create(ctx, "t", sandbox.CreateRequest{Image: ref, MemoryMiB: 256})
	if err != nil {
		t.Fatalf("create from %s: %v", ref, err)
	}
	return b
}

// checkConfigApplies runs the image config checks shared by the engines.
func checkConfigApplies(t *testing.T, w *world, box string) {
	t.Helper()
	out, res, err := w.run(t, box, "sh", "-c", `id -un; pwd; echo "$GREETING"; test -x /usr/local/bin/boxlite-guest && echo agent`)
	if err != nil || res.ExitCode != 0 || out != "nobody\n/srv/work\nfrom-image\nagent\n" {
		t.Errorf("config: %q %+v %v", out, res, err)
	}
	out, res, err = w.run(t, box, "python3", "-c", "import os; print(6*7, os.getuid())")
	if err != nil || res.ExitCode != 0 || out != "42 65534\n" {
		t.Errorf("python: %q %+v %v", out, res, err)
	}
	checkSessionsLikeFresh(t, w, box)
}

// checkSessionsLikeFresh: an interpreter session runs as the fresh runs of
// the box do: the image's user (and no other groups), working directory and
// environment.
func checkSessionsLikeFresh(t *testing.T, w *world, box string) {
	t.Helper()
	for _, tt := range []struct {
		lang, code string
		argv       []string
	}{
		{sandbox.LangPython, pyIdentity, []string{"python3", "-c", pyIdentity}},
		{sandbox.LangJavaScript, jsIdentity, []string{"node", "-e", jsIdentity}},
	} {
		fresh, res, err := w.run(t, box, tt.argv...)
		if err != nil || res.ExitCode != 0 || !strings.HasPrefix(fresh, "65534 65534 [] /srv/work from-image ") {
			t.Errorf("%s fresh: %q %+v %v", tt.lang, fresh, res, err)
			continue
		}
		var out bytes.Buffer
		sres, _, err := w.m.RunSession(context.Background(), "t", box, sandbox.SessionRequest{Name: "default", Language: tt.lang, TimeoutMs: 120_000},
			tt.code, sandbox.SessionIO{Stdout: &out, Stderr: &out})
		if err != nil || sres.ExitCode != 0 || out.String() != fresh {
			t.Errorf("%s session: %q, fresh run: %q (%+v %v)", tt.lang, out.String(), fresh, sres, err)
		}
	}
}

// pyIdentity and jsIdentity print the identity, directory and environment
// a run has.
const (
	pyIdentity = `import os; print(os.getuid(), os.getgid(), sorted(set(os.getgroups()) - {os.getgid()}), os.getcwd(), *[os.environ.get(k) for k in ("GREETING", "HOME", "PATH", "LANG")])`
	jsIdentity = `console.log(process.getuid(), process.getgid(), JSON.stringify(process.getgroups().filter((g) => g !== process.getgid())), process.cwd(), ...["GREETING", "HOME", "PATH", "LANG"].map((k) => process.env[k]))`
)

// TestOCIBoxesJail: boxes of pulled images on the jail engine.
func TestOCIBoxesJail(t *testing.T) {
	w := newWorld(t, "", func(home string, log *slog.Logger) sandbox.Engine {
		return jail.New(jail.Config{Home: home, Logger: log})
	})
	b := w.create(t, w.ref)
	if b.Spec.WorkDir != "/srv/work" || b.Spec.UID == nil || *b.Spec.UID != 65534 {
		t.Errorf("spec %+v", b.Spec)
	}
	checkConfigApplies(t, w, b.ID)
	// The image's files are root's and read-only to the box's user and root.
	if out, _, _ := w.run(t, b.ID, "sh", "-c", "stat -c %U /usr/bin/python3 /etc/passwd; touch /etc/x 2>&1 || echo denied"); !strings.Contains(out, "root\nroot\n") || !strings.Contains(out, "denied") {
		t.Errorf("image files: %q", out)
	}

	// Without Python: commands run, and Python is missing.
	nb := w.create(t, w.noref)
	if out, res, err := w.run(t, nb.ID, "sh", "-c", "echo hi; id -u"); err != nil || out != "hi\n0\n" || res.ExitCode != 0 {
		t.Errorf("nopython sh: %q %v", out, err)
	}
	if _, _, err := w.run(t, nb.ID, "python3", "-c", "1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("nopython python3: %v", err)
	}
	// Both images share the base layer in the cache.
	if ls, _ := filepath.Glob(filepath.Join(w.home, "layers/sha256/[0-9a-f]*")); len(ls) != 2 {
		t.Errorf("cached blobs: %v", ls)
	}
}

// bootDir is a boot image for the VM: the cached default image's kernel
// and modules, with an initramfs around this tree's agent (so the test
// needs no rebuild of the default image when only the agent changed).
func bootDir(t *testing.T) string {
	t.Helper()
	base := baseImage(t)
	if base.Manifest.Kernel == nil {
		t.Skip("the default image has no VM kernel")
	}
	dir := filepath.Join(t.TempDir(), "default")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base.Dir, "modules"), filepath.Join(dir, "modules")); err != nil {
		t.Fatal(err)
	}
	kernel, err := os.ReadFile(base.KernelPath())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644)
	k := *base.Manifest.Kernel
	if k.InitrdSHA, err = qemu.WriteInitramfs(dir, testenv.Agent(t), k.Modules); err != nil {
		t.Fatal(err)
	}
	m := base.Manifest
	m.Kernel = &k
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestOCIBoxesQemu: a box of a pulled image in a TCG microVM (one boot).
func TestOCIBoxesQemu(t *testing.T) {
	testenv.RequireRoot(t)
	if a := qemu.New(qemu.Config{}).Available(context.Background()); !a.Usable {
		t.Skipf("qemu unusable: %s", a.Reason)
	}
	w := newWorld(t, bootDir(t), func(home string, log *slog.Logger) sandbox.Engine {
		return qemu.New(qemu.Config{Home: home, Logger: log, DieWithParent: true})
	})
	b := w.create(t, w.ref)
	checkConfigApplies(t, w, b.ID)
	m, err := oci.ReadMeta(filepath.Join(w.home, "images", b.Image))
	if err != nil || m.Boot == nil || m.Boot.From != "default" {
		t.Errorf("boot files: %+v %v", m, err)
	}
}
