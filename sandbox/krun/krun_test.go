package krun_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/krun"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// The tests here run the krun engine against a TEST DOUBLE of libkrun
// (testdata/fakekrun.c), not a VM: the real libkrun is not installable on
// the Debian CI hosts. They exercise dlopen, the shim, the configuration on
// stdin, the socket wiring, hello, exec, stop and destroy; not virtualization.

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == krun.ShimArg {
		krun.ShimMain()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == network.HelperArg {
		os.Exit(network.HelperMain())
	}
	os.Exit(m.Run())
}

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

// buildFake compiles the libkrun test double into dir/libkrun.so.1.
func buildFake(t *testing.T, defines ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	args := append([]string{"-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", filepath.Join(dir, "libkrun.so.1")}, defines...)
	args = append(args, "testdata/fakekrun.c")
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	// The confined shim (the box's uid) reads the library's directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeEnv is a home with the built image, the double in libDir, and its
// call log: a directory bound writable into the confined shim.
type fakeEnv struct {
	home, libDir, log string
}

func newFakeEnv(t *testing.T, home string, defines ...string) fakeEnv {
	t.Helper()
	logDir := t.TempDir()
	if err := os.Chmod(logDir, 0o777); err != nil { // written by the box's uid
		t.Fatal(err)
	}
	return fakeEnv{home: home, libDir: buildFake(t, defines...), log: filepath.Join(logDir, "calls.log")}
}

// agentIn copies src into the double's directory (the confined shim sees
// nothing else of the host's temporary files) and returns its path there.
func agentIn(t *testing.T, libDir, src string) string {
	t.Helper()
	dst := filepath.Join(libDir, filepath.Base(src))
	if _, err := os.Stat(dst); err == nil {
		return dst // copied for an earlier engine of the same test (and maybe running)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// engineConfig is the engine on the double: the shim finds it through
// LD_LIBRARY_PATH, as it would the real library, and runs the agent (on
// the host, confined like the shim) where the real one would boot a VM.
func engineConfig(t *testing.T, fe fakeEnv) krun.Config {
	return krun.Config{
		Home: fe.home, Library: filepath.Join(fe.libDir, "libkrun.so.1"), SkipHypervisorCheck: true,
		ShimEnv: []string{"LD_LIBRARY_PATH=" + fe.libDir, "FAKEKRUN_LOG=" + fe.log,
			"FAKEKRUN_AGENT=" + agentIn(t, fe.libDir, testenv.Agent(t))},
		ShimBinds:     []confine.Bind{{Path: filepath.Dir(fe.log), Writable: true}},
		DieWithParent: true,
		Logger:        slog.New(slog.NewTextHandler(tw{t}, nil)),
	}
}

func newEngine(t *testing.T, fe fakeEnv) *krun.Engine { return krun.New(engineConfig(t, fe)) }

func specFor(home, id string) sandbox.Spec {
	dir := filepath.Join(home, "boxes", id)
	os.MkdirAll(dir, 0o700)
	os.MkdirAll(filepath.Join(home, "run"), 0o700)
	return sandbox.Spec{ID: id, Image: "default", CPUs: 2, MemoryMiB: 256, BoxDir: dir, Socket: filepath.Join(home, "run", id+".sock"),
		Env: map[string]string{"SECRET": "s3"}}
}

func TestKrunWithLibkrunTestDouble(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	home := builtImageHome(t)
	fe := newFakeEnv(t, home)
	enginetest.Run(t, enginetest.Target{
		New:  func() sandbox.Engine { return newEngine(t, fe) },
		Spec: func(t *testing.T, _, id string) sandbox.Spec { return specFor(home, id) },
		// The double runs the agent on the host, confined like the shim: keep
		// the file in the shim's directory, the one it may write.
		PersistPath: func(s sandbox.Spec) string { return filepath.Join(krun.VMMDir(s), "data", "f.txt") },
	})
	calls, err := os.ReadFile(fe.log)
	if err != nil {
		t.Fatal(err)
	}
	log := string(calls)
	for _, want := range []string{
		"krun_set_vm_config 0 2 256", "fmt=1 ro=0", "krun_set_root_disk_remount 0 /dev/vda ext4",
		"krun_disable_implicit_vsock 0", "krun_add_vsock 0 tsi=0", "listen=1", "envp=set", "env SECRET=s3",
		"arg --listen", "arg vsock:1024", "rlimit 7=1048576:1048576", "krun_start_enter 0",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("call log lacks %q:\n%s", want, log)
		}
	}
	// Never the host's environment.
	if strings.Contains(log, "env FAKEKRUN_") || strings.Contains(log, "env LD_LIBRARY_PATH") {
		t.Errorf("host environment leaked into the guest:\n%s", log)
	}
	// Disable-vsock comes before the port mapping.
	if strings.Index(log, "krun_add_vsock 0") > strings.Index(log, "krun_add_vsock_port2 0") {
		t.Error("vsock port mapped before the vsock device was replaced")
	}
}

func TestKrunUnavailable(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	// No library at all.
	e := krun.New(krun.Config{Home: home, Library: filepath.Join(t.TempDir(), "libkrun.so.1")})
	a := e.Available(ctx)
	if a.Usable || !strings.Contains(a.Reason, "dnf install libkrun") || !strings.Contains(a.Reason, "brew") {
		t.Fatalf("no library: %+v", a)
	}
	_, err := e.Start(ctx, specFor(home, persist.NewID()))
	if msg := sandbox.PublicMessage(err); !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(msg, "boxlite-mcp doctor") ||
		strings.Contains(msg, "/") || !strings.Contains(err.Error(), "dnf install libkrun") {
		t.Fatalf("Start without library = %v (public: %q); want a pointer to doctor, and the library path and install hint only in the cause", err, msg)
	}
	// An old library lacking the 1.17 symbols: usable only with network.
	old := buildFake(t, "-DOLD_LIBKRUN")
	e = krun.New(krun.Config{Home: home, Library: filepath.Join(old, "libkrun.so.1"), SkipHypervisorCheck: true})
	a = e.Available(ctx)
	if !a.Usable || !strings.Contains(strings.Join(a.Details, " "), "1.17") {
		t.Fatalf("old library: %+v", a)
	}
	_, err = e.Start(ctx, specFor(home, persist.NewID()))
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(sandbox.PublicMessage(err), "krun_disable_implicit_vsock") {
		t.Fatalf("Start on old libkrun without network = %v", err)
	}
	// A library missing a required symbol.
	dir := t.TempDir()
	src := filepath.Join(dir, "x.c")
	os.WriteFile(src, []byte("int krun_create_ctx(void){return 0;}\n"), 0o644)
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", filepath.Join(dir, "libkrun.so.1"), src).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	a = krun.New(krun.Config{Home: home, Library: filepath.Join(dir, "libkrun.so.1"), SkipHypervisorCheck: true}).Available(ctx)
	if a.Usable || !strings.Contains(a.Reason, "too old") || !strings.Contains(a.Reason, "krun_add_disk2") {
		t.Fatalf("missing symbols: %+v", a)
	}
	// No usable KVM (this host's is PVM-only or absent).
	if ok, _ := sandbox.KVMUsable(); !ok {
		a = krun.New(krun.Config{Home: home, Library: filepath.Join(old, "libkrun.so.1")}).Available(ctx)
		if a.Usable || !strings.Contains(a.Reason, "KVM") {
			t.Fatalf("no KVM: %+v", a)
		}
	}
}

// TestKrunShimFailureIsReported: an error before boot (here the double's
// start_enter cannot find its "kernel") reaches the caller as a public
// message without libkrun's C function, return code or host paths; those
// are in the server log, under the box id, and in the internal cause.
func TestKrunShimFailureIsReported(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	home := builtImageHome(t)
	libDir := buildFake(t)
	var logBuf strings.Builder
	e := krun.New(krun.Config{Home: home, Library: filepath.Join(libDir, "libkrun.so.1"), SkipHypervisorCheck: true,
		ShimEnv: []string{"LD_LIBRARY_PATH=" + libDir}, DieWithParent: true, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	spec := specFor(home, persist.NewID())
	_, err := e.Start(context.Background(), spec)
	if err == nil {
		t.Fatal("Start succeeded")
	}
	msg := sandbox.PublicMessage(err)
	t.Logf("public: %s", msg)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(msg, "libkrun could not boot the VM") || !strings.Contains(msg, "server log for box "+spec.ID) {
		t.Errorf("public message %q does not say what happened and where to look", msg)
	}
	for _, leak := range []string{"krun_start_enter", "-2", "/", "failed:"} {
		if strings.Contains(msg, leak) {
			t.Errorf("public message %q contains %q", msg, leak)
		}
	}
	if !strings.Contains(err.Error(), "krun_start_enter failed: -2") {
		t.Errorf("internal cause lacks libkrun's error: %v", err)
	}
	if logged := logBuf.String(); !strings.Contains(logged, "box_id="+spec.ID) || !strings.Contains(logged, "krun_start_enter failed: -2") {
		t.Errorf("server log lacks the box id or libkrun's error:\n%s", logged)
	}
	if _, err := os.Lstat(krun.AgentSocket(spec)); !errors.Is(err, os.ErrNotExist) {
		t.Error("socket left after a failed start")
	}
	e.Destroy(context.Background(), spec, sandbox.Handle{})
}

// TestKrunDiskSize: the box's disk is the size asked for (disk_mib), made by
// the helper both VM engines share.
func TestKrunDiskSize(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	home := builtImageHome(t)
	e := newEngine(t, newFakeEnv(t, home))
	spec := specFor(home, persist.NewID())
	spec.DiskMiB = 5000
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Destroy(context.Background(), spec, h) })
	out, err := exec.Command(qemuImg, "info", "--output=json", "-U", filepath.Join(spec.BoxDir, sandbox.DiskFile)).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"virtual-size": 5242880000,`) {
		t.Fatalf("disk of a 5000 MiB box:\n%s", out)
	}
}
