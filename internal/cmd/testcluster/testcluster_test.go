package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// defaultBin is where integration/k8s/build.sh puts the binaries.
const defaultBin = "/var/cache/boxlite-k8s/kube-v1.37.2-etcd-v3.7.3"

// requireCluster skips unless this host can run the test cluster, saying why.
func requireCluster(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the test cluster needs root (network interfaces, mounts, cgroups)")
	}
	bin := os.Getenv("BOXLITE_K8S_BIN")
	if bin == "" {
		bin = defaultBin
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("%s not in %s: run make k8s-binaries (or set BOXLITE_K8S_BIN)", b, bin)
		}
	}
	for _, b := range []string{"containerd", "ctr", "runc", "ip", "/usr/lib/cni/bridge"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s missing: make deps-apt installs containerd, runc, containernetworking-plugins", b)
		}
	}
	return bin
}

// buildTool builds this command static, as the pause image needs it.
func buildTool(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "testcluster")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func runTool(t *testing.T, tool string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(tool, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("testcluster %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

func TestCluster(t *testing.T) {
	bin := requireCluster(t)
	tool := buildTool(t)
	dir := filepath.Join(t.TempDir(), "cluster")
	hello := filepath.Join(t.TempDir(), "hello.tar")
	if err := binaryImage(hello, "boxlite.test/hello:1", tool, "/hello", []string{"/hello", "echo"}); err != nil {
		t.Fatal(err)
	}
	sysctlBefore := readSysctls(t)

	start := time.Now()
	var c Cluster
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			_ = exec.Command(tool, "down", "--dir", dir).Run()
		}
	})
	if err := json.Unmarshal(runTool(t, tool, "up", "--dir", dir, "--bin", bin, "--image", hello), &c); err != nil {
		t.Fatal(err)
	}
	t.Logf("up took %s (slot %d, node IP %s)", time.Since(start).Round(time.Millisecond), c.Slot, c.NodeIP)
	if !c.Ready || c.Namespace != "boxlite" || c.RuntimeClass != "boxlite-test-runc" || c.Node != "boxlite-test-node" {
		t.Fatalf("cluster.json: %+v", c)
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil && bytes.Contains(out, []byte("KUBE-")) {
		t.Errorf("the kubelet added iptables chains to the host:\n%s", out)
	}
	if got := readSysctls(t); got != sysctlBefore {
		t.Errorf("host sysctls changed by the kubelet: %s, were %s", got, sysctlBefore)
	}
	user, err := newAPIClient(c.Server, filepath.Join(dir, "pki/ca.crt"),
		filepath.Join(dir, "pki/boxlite-test-user.crt"), filepath.Join(dir, "pki/boxlite-test-user.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pods := "/api/v1/namespaces/boxlite/pods"

	t.Run("restricted user runs a pod to completion and reads its log", func(t *testing.T) {
		runToCompletion(ctx, t, user, "hello", "boxlite.test/hello:1", "hello from a pod")
	})
	t.Run("imported image runs", func(t *testing.T) {
		second := filepath.Join(t.TempDir(), "hello2.tar")
		if err := binaryImage(second, "boxlite.test/hello:2", tool, "/bin/hello", []string{"/bin/hello", "echo"}); err != nil {
			t.Fatal(err)
		}
		runTool(t, tool, "import", "--dir", dir, second)
		runToCompletion(ctx, t, user, "hello2", "boxlite.test/hello:2", "second image")
	})
	t.Run("pod with the runtime class runs", func(t *testing.T) {
		var rc struct {
			Handler string `json:"handler"`
		}
		if err := user.do(ctx, http.MethodGet, "/apis/node.k8s.io/v1/runtimeclasses/boxlite-test-runc", nil, &rc); err != nil || rc.Handler != "runc" {
			t.Fatalf("runtime class as the restricted user: %+v %v", rc, err)
		}
		pod := obj{"apiVersion": "v1", "kind": "Pod", "metadata": obj{"name": "rc"},
			"spec": obj{"runtimeClassName": "boxlite-test-runc", "automountServiceAccountToken": false,
				"terminationGracePeriodSeconds": 0,
				"containers":                    []any{obj{"name": "c", "image": pauseRef, "imagePullPolicy": "IfNotPresent"}}}}
		if err := user.create(ctx, pods, pod); err != nil {
			t.Fatal(err)
		}
		p, err := user.waitPod(ctx, "boxlite", "rc", "Running")
		if err != nil {
			t.Fatal(err)
		}
		if p.Spec.RuntimeClassName != "boxlite-test-runc" || p.Spec.NodeName != "boxlite-test-node" {
			t.Fatalf("pod spec: %+v", p.Spec)
		}
	})
	t.Run("api subcommand speaks as the admin", func(t *testing.T) {
		var ns struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err := json.Unmarshal(runTool(t, tool, "api", "--dir", dir, "GET", "/api/v1/namespaces/kube-system"), &ns); err != nil || ns.Metadata.Name != "kube-system" {
			t.Fatalf("api GET: %+v %v", ns, err)
		}
		runTool(t, tool, "api", "--dir", dir, "PATCH", "/api/v1/namespaces/boxlite", `{"metadata":{"labels":{"x":"y"}}}`)
	})
	t.Run("restricted user is confined to its namespace", func(t *testing.T) {
		pod := obj{"apiVersion": "v1", "kind": "Pod", "metadata": obj{"name": "escape"},
			"spec": obj{"containers": []any{obj{"name": "c", "image": pauseRef}}}}
		for _, tc := range []struct{ method, path string }{
			{http.MethodPost, "/api/v1/namespaces/default/pods"},
			{http.MethodGet, "/api/v1/namespaces/boxlite/secrets"},
			{http.MethodGet, "/api/v1/namespaces/kube-system/pods"},
			{http.MethodPost, "/api/v1/namespaces"},
			{http.MethodGet, "/api/v1/nodes/boxlite-test-node/proxy/pods"},
		} {
			var body any
			if tc.method == http.MethodPost {
				body = pod
			}
			err := user.do(ctx, tc.method, tc.path, body, nil)
			var se *statusError
			if !errors.As(err, &se) || se.Code != http.StatusForbidden {
				t.Errorf("%s %s as the restricted user: %v, want 403", tc.method, tc.path, err)
			}
		}
	})
	t.Logf("memory of the cluster at rest: %d MiB RSS", clusterRSS(&c)>>20)
	var sockets []string
	for _, pid := range allPids() {
		if s, ok := shimOf(&c, pid); ok {
			if _, err := os.Stat(s); err != nil {
				t.Errorf("shim %d: socket not where down looks for it: %v", pid, err)
			}
			sockets = append(sockets, s)
		}
	}
	if len(sockets) == 0 {
		t.Error("no containerd shim found by its -address")
	}

	sandboxes := sandboxIDs(&c)
	if len(sandboxes) == 0 {
		t.Error("no pod sandbox found in containerd's CRI state")
	}
	start = time.Now()
	runTool(t, tool, "down", "--dir", dir)
	downDone = true
	t.Logf("down took %s", time.Since(start).Round(time.Millisecond))
	assertGone(t, &c, sandboxes)
	for _, s := range sockets {
		if _, err := os.Stat(s); !os.IsNotExist(err) {
			t.Errorf("shim socket %s remains (%v)", s, err)
		}
	}
	runTool(t, tool, "down", "--dir", dir) // idempotent

	t.Run("down cleans up after a killed up", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "killed")
		up := exec.Command(tool, "up", "--dir", dir, "--bin", bin)
		if err := up.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = exec.Command(tool, "down", "--dir", dir).Run() })
		// Kill up while it runs a helper (the ctr that waits for
		// containerd after the kubelet's start): the helper must not
		// outlive up and down (CI saw an orphaned ctr survive down,
		// dialling a socket down had removed). The helper is stopped
		// first so that it is still there, slow, when up dies.
		var helper int
		err := poll(ctx, "a ctr of up after the kubelet's start", 2*time.Millisecond, func() (bool, error) {
			helper = childNamed(up.Process.Pid, "ctr")
			return helper > 0 && syscall.Kill(helper, syscall.SIGSTOP) == nil, nil
		})
		_ = up.Process.Kill()
		_ = up.Wait()
		if err != nil {
			t.Fatal(err)
		}
		c, err := loadCluster(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Processes) != 5 {
			t.Fatalf("up recorded %d daemons before its first ctr, want 5", len(c.Processes))
		}
		sandboxes := sandboxIDs(c)
		runTool(t, tool, "down", "--dir", dir)
		assertGone(t, c, sandboxes)
	})
}

func runToCompletion(ctx context.Context, t *testing.T, user *apiClient, name, image, msg string) {
	t.Helper()
	pod := obj{"apiVersion": "v1", "kind": "Pod", "metadata": obj{"name": name},
		"spec": obj{"restartPolicy": "Never", "automountServiceAccountToken": false,
			"containers": []any{obj{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent", "args": []string{msg}}}}}
	if err := user.create(ctx, "/api/v1/namespaces/boxlite/pods", pod); err != nil {
		t.Fatal(err)
	}
	if _, err := user.waitPod(ctx, "boxlite", name, "Succeeded"); err != nil {
		t.Fatal(err)
	}
	var log string
	if err := user.do(ctx, http.MethodGet, "/api/v1/namespaces/boxlite/pods/"+name+"/log", nil, &log); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(log) != msg {
		t.Fatalf("pod log %q, want %q", log, msg)
	}
}

func readSysctls(t *testing.T) string {
	var out []string
	for name := range sysctlMasks {
		b, err := os.ReadFile("/proc/sys/" + name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, name+"="+strings.TrimSpace(string(b)))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// clusterRSS sums the resident memory of the daemons, shims and containers.
func clusterRSS(c *Cluster) int64 {
	var sum int64
	for _, pid := range allPids() {
		_, shim := shimOf(c, pid)
		mine := shim || inCgroupRoot(pid, c.CgroupRoot)
		for _, p := range c.Processes {
			mine = mine || p.PID == pid
		}
		if !mine {
			continue
		}
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				sum += kb << 10
			}
		}
	}
	return sum
}

// childNamed returns a child process of pid that runs the command name,
// or 0.
func childNamed(pid int, name string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, child := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile("/proc/" + child + "/comm")
			if strings.TrimSpace(string(comm)) == name {
				n, _ := strconv.Atoi(child)
				return n
			}
		}
	}
	return 0
}

// assertGone checks down left nothing: processes, mounts, links, cgroups,
// CNI results, the directory.
func assertGone(t *testing.T, c *Cluster, sandboxes []string) {
	t.Helper()
	for _, p := range c.Processes {
		if p.Alive() {
			t.Errorf("%s (pid %d) still runs", p.Name, p.PID)
		}
	}
	for _, pid := range allPids() {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		_, shim := shimOf(c, pid)
		if shim || inCgroupRoot(pid, c.CgroupRoot) || bytes.Contains(b, []byte(c.Dir)) {
			t.Errorf("process %d of the cluster survives: %q", pid, b)
		}
	}
	if ms, err := mountsUnder(c.Dir); err != nil || len(ms) > 0 {
		t.Errorf("mounts under %s: %v %v", c.Dir, ms, err)
	}
	for _, l := range []string{c.Bridge, c.Dummy} {
		if linkExists(l) {
			t.Errorf("link %s remains", l)
		}
	}
	if ds := cgroupDirs(c.CgroupRoot); len(ds) > 0 {
		t.Errorf("cgroups remain: %v", ds)
	}
	if fs, _ := filepath.Glob("/var/lib/cni/results/" + c.CNINetwork + "-*"); len(fs) > 0 {
		t.Errorf("CNI results remain: %v", fs)
	}
	for _, id := range sandboxes {
		if _, err := os.Stat("/var/lib/cni/results/cni-loopback-" + id + "-lo"); !os.IsNotExist(err) {
			t.Errorf("CNI loopback result of sandbox %s remains (%v)", id, err)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s remains (%v)", c.Dir, err)
	}
}
