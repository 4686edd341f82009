package confine_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/confinespec"
	"github.com/boxlite-ai/boxlite-mcp/internal/cgroups"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/confine"
)

// report is what the confined program (this test binary, in reporter mode)
// finds out about itself, from the inside.
type report struct {
	Status     map[string]string `json:"status"` // /proc/self/status fields
	Root       []string          `json:"root"`   // names in /
	SecretErr  string            `json:"secret_err"`
	WriteRoot  string            `json:"write_root"` // creating a file in / (must fail)
	WriteBind  string            `json:"write_bind"` // in a read-only bind (must fail)
	Loopback   string            `json:"loopback"`   // dialing the host's loopback
	Unshare    string            `json:"unshare"`    // a new user namespace (must fail)
	Setuid     string            `json:"setuid"`     // becoming another uid (must fail)
	PassedFD   string            `json:"passed_fd"`  // writing to the passed descriptor
	Interfaces []string          `json:"interfaces"`
	PIDs       []string          `json:"pids"` // processes it can see
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestMain turns the test binary into the confined program when asked.
func TestMain(m *testing.M) {
	if os.Getenv("CONFINE_REPORTER") == "1" {
		reporter()
		return
	}
	os.Exit(m.Run())
}

func reporter() {
	var r report
	r.Status = map[string]string{}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				r.Status[k] = strings.TrimSpace(v)
			}
		}
	}
	ents, _ := os.ReadDir("/")
	for _, e := range ents {
		r.Root = append(r.Root, e.Name())
	}
	_, err := os.ReadFile(os.Getenv("CONFINE_SECRET"))
	r.SecretErr = errString(err)
	if err == nil {
		r.SecretErr = "READ"
	}
	r.WriteRoot = errString(os.WriteFile("/planted", []byte("x"), 0o644))
	r.WriteBind = errString(os.WriteFile(filepath.Join(os.Getenv("CONFINE_BIND"), "planted"), []byte("x"), 0o644))
	c, err := net.DialTimeout("tcp", os.Getenv("CONFINE_LOOPBACK"), 2*time.Second)
	r.Loopback = errString(err)
	if err == nil {
		c.Close()
		r.Loopback = "CONNECTED"
	}
	r.Unshare = errString(syscall.Unshare(syscall.CLONE_NEWUSER))
	r.Setuid = errString(syscall.Setuid(1))
	f := os.NewFile(uintptr(confinespec.PassFD(0)), "passed")
	_, err = f.Write([]byte("through the passed descriptor\n"))
	r.PassedFD = errString(err)
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		r.Interfaces = append(r.Interfaces, i.Name)
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if p.Name()[0] >= '0' && p.Name()[0] <= '9' {
			r.PIDs = append(r.PIDs, p.Name())
		}
	}
	json.NewEncoder(os.Stdout).Encode(r)
	// Stay until the test has looked at us from the host.
	var b [1]byte
	os.NewFile(uintptr(confinespec.PassFD(1)), "hold").Read(b[:])
}

// TestConfinedProgram runs a program confined and checks, from inside and
// from the host, everything a compromised VMM would try: it is not root on
// the host, has no capability, is under seccomp with no_new_privs, sees
// none of the host's files but its binds, cannot write even those, cannot
// reach the host's loopback, cannot make namespaces or change uid, and is
// in its own cgroup with a memory and pids limit.
func TestConfinedProgram(t *testing.T) {
	testenv.RequireRoot(t)
	stage, err := os.Open(testenv.Agent(t))
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	exePath, _ := os.Executable()
	exe, err := os.Open(exePath)
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()

	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	os.WriteFile(secret, []byte("host secret"), 0o644)
	bindDir := t.TempDir()
	os.Chmod(bindDir, 0o777) // even a world-writable bind is read-only inside
	os.Chmod(filepath.Dir(exePath), 0o755)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	passR, passW, _ := os.Pipe()
	defer passR.Close()
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	inR, inW, _ := os.Pipe()
	defer inW.Close()

	const uid = 1_900_000_000
	name := fmt.Sprintf("confine-test-%d", os.Getpid())
	p, err := confine.Start(confine.Spec{
		Name: name, UID: uid, Stage: stage, Exe: exe,
		Args: []string{"reporter"},
		Env: []string{"CONFINE_REPORTER=1", "CONFINE_SECRET=" + secret, "CONFINE_BIND=" + bindDir,
			"CONFINE_LOOPBACK=" + l.Addr().String()},
		Binds:  []confine.Bind{{Path: exePath}, {Path: bindDir}},
		Pass:   []*os.File{passW, inR},
		Stdout: outW, Stderr: os.Stderr,
		Limits: cgroups.Limits{MemoryBytes: 256 << 20, PidsMax: 64, CPUWeight: 1},
	})
	passW.Close()
	outW.Close()
	inR.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Abort() })
	if err := p.Go(); err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.NewDecoder(outR).Decode(&r); err != nil {
		t.Fatalf("no report from the confined program: %v", err)
	}
	t.Logf("report: %+v", r)

	// From inside.
	for k, want := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000",
		"CapInh": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2"} {
		if r.Status[k] != want {
			t.Errorf("%s = %q inside, want %q", k, r.Status[k], want)
		}
	}
	for _, n := range r.Root {
		switch n {
		case "usr", "lib", "lib64", "bin", "sbin", "etc", "dev", "proc", "tmp", "var":
		default:
			t.Errorf("unexpected /%s in the confined root (root: %v)", n, r.Root)
		}
	}
	if !strings.Contains(r.SecretErr, "no such file") {
		t.Errorf("reading an unbound host file: %q, want it absent", r.SecretErr)
	}
	if r.WriteRoot == "" || r.WriteBind == "" {
		t.Errorf("writes succeeded: root %q, read-only bind %q", r.WriteRoot, r.WriteBind)
	}
	if _, err := os.Stat(filepath.Join(bindDir, "planted")); err == nil {
		t.Error("the program planted a file in a read-only bind")
	}
	if r.Loopback == "CONNECTED" {
		t.Error("the program reached the host's loopback")
	}
	if r.Unshare == "" || r.Setuid == "" {
		t.Errorf("unshare(CLONE_NEWUSER) = %q, setuid(1) = %q: both must fail", r.Unshare, r.Setuid)
	}
	if r.PassedFD != "" {
		t.Errorf("writing the passed descriptor: %s", r.PassedFD)
	}
	if len(r.PIDs) != 1 || r.PIDs[0] != "1" {
		t.Errorf("the program sees processes %v, want only itself as 1", r.PIDs)
	}
	for _, i := range r.Interfaces {
		if i != "lo" {
			t.Errorf("interface %s in the program's network namespace", i)
		}
	}
	buf := make([]byte, 100)
	n, _ := passR.Read(buf)
	if !strings.Contains(string(buf[:n]), "passed descriptor") {
		t.Errorf("passed descriptor carried %q", buf[:n])
	}

	// From the host.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.ID.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") {
			for _, f := range strings.Fields(l)[1:] {
				if f != fmt.Sprint(uid) {
					t.Errorf("host view %q: want every id %d", l, uid)
				}
			}
		}
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.ID.PID))
	if !strings.Contains(string(cg), "boxlite/"+name) {
		t.Errorf("not in its cgroup: %s", cg)
	}
	for _, d := range p.Cgroup {
		for _, f := range []string{"memory.limit_in_bytes", "memory.max"} {
			if b, err := os.ReadFile(filepath.Join(d, f)); err == nil && strings.TrimSpace(string(b)) != fmt.Sprint(256<<20) {
				t.Errorf("%s/%s = %s", d, f, b)
			}
		}
		if b, err := os.ReadFile(filepath.Join(d, "pids.max")); err == nil && strings.TrimSpace(string(b)) != "64" {
			t.Errorf("%s/pids.max = %s", d, b)
		}
	}
	p.Abort()
	for _, d := range p.Cgroup {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left behind", d)
		}
	}
}
