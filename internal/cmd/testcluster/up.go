package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// up brings the cluster up under dir; on failure it shows the daemons' log
// tails and tears down what it made.
func up(ctx context.Context, dir, bin string, images []string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(stateFile(dir)); err == nil {
		return nil, fmt.Errorf("%s exists: the cluster is up or was not taken down (testcluster down --dir %s)", stateFile(dir), dir)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%s missing in %s (integration/k8s/build.sh builds it)", b, bin)
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "ip", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not found: install Debian's containerd, runc, containernetworking-plugins and iproute2 (make deps-apt)", b)
		}
	}
	c := newCluster(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	if err := bringUp(ctx, c, bin, images); err != nil {
		showLogs(c)
		if derr := down(dir); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", derr))
		}
		return nil, err
	}
	return c, nil
}

func bringUp(ctx context.Context, c *Cluster, bin string, images []string) error {
	if err := makeShared(c.Dir); err != nil {
		return err
	}
	c.SharedMount = true
	if err := c.save(); err != nil {
		return err
	}
	for _, d := range []string{"pki", "logs", "etcd", "containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "sysctl", "images"} {
		if err := os.MkdirAll(c.path(d), 0o700); err != nil {
			return err
		}
	}
	if err := claimSlot(c); err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	if err := setupNetwork(c); err != nil {
		return err
	}
	if err := createCgroupRoot(c.CgroupRoot); err != nil {
		return err
	}
	ports := map[string]int{}
	for _, p := range []string{"etcd", "etcd-peer", "apiserver", "kubelet", "kubelet-healthz"} {
		n, err := freePort()
		if err != nil {
			return err
		}
		ports[p] = n
	}
	c.Server = portURL("https", ports["apiserver"])
	if err := writePKI(c); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("containerd", "config.toml"), []byte(containerdConfig(c)), 0o600); err != nil {
		return err
	}
	if err := writeJSON(c.path("cni", "net.d", "10-boxlite.conflist"), cniConfig(c)); err != nil {
		return err
	}
	if err := writeJSON(c.path("kubelet", "config.yaml"), kubeletConfig(c, ports["kubelet"], ports["kubelet-healthz"])); err != nil {
		return err
	}

	pki := func(f string) string { return c.path("pki", f) }
	etcdURL := portURL("https", ports["etcd"])
	peerURL := portURL("http", ports["etcd-peer"])
	if err := start(c, "etcd", filepath.Join(bin, "etcd"),
		"--name=default", "--data-dir="+c.path("etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--listen-metrics-urls=",
		"--cert-file="+pki("etcd.crt"), "--key-file="+pki("etcd.key"),
		"--trusted-ca-file="+pki("ca.crt"), "--client-cert-auth",
		"--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return err
	}
	if err := start(c, "containerd", "containerd", "--config", c.path("containerd", "config.toml")); err != nil {
		return err
	}
	if err := start(c, "kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports["apiserver"]),
		"--advertise-address="+c.NodeIP, "--cert-dir="+c.path("pki", "apiserver-generated"),
		"--etcd-servers="+etcdURL, "--etcd-cafile="+pki("ca.crt"),
		"--etcd-certfile="+pki("apiserver-etcd-client.crt"), "--etcd-keyfile="+pki("apiserver-etcd-client.key"),
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--authorization-mode=Node,RBAC", "--anonymous-auth=false",
		"--enable-admission-plugins=NodeRestriction", "--disable-admission-plugins=ServiceAccount",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+pki("sa.pub"), "--service-account-signing-key-file="+pki("sa.key"),
		"--service-cluster-ip-range="+strings.Replace(c.PodCIDR, "198.18.", "198.19.", 1),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false", "--v=1"); err != nil {
		return err
	}
	admin, err := newAPIClient(c.Server, pki("ca.crt"), pki("admin.crt"), pki("admin.key"))
	if err != nil {
		return err
	}
	if err := poll(ctx, "kube-apiserver /readyz", 300*time.Millisecond, func() (bool, error) {
		if err := c.alive(); err != nil {
			return true, err
		}
		return admin.do(ctx, http.MethodGet, "/readyz", nil, nil) == nil, nil
	}); err != nil {
		return err
	}
	for _, o := range rbacObjects() {
		if err := admin.create(ctx, o[0].(string), o[1]); err != nil {
			return err
		}
	}
	if err := start(c, "kube-scheduler", filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig="+c.path("kubeconfig-scheduler"), "--secure-port=0", "--leader-elect=false", "--v=1"); err != nil {
		return err
	}
	// The kubelet starts through this binary, which masks the sysctls the
	// kubelet would otherwise rewrite on the host (see kubeletNS).
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := start(c, "kubelet", self, "kubelet-ns", c.path("sysctl"), filepath.Join(bin, "kubelet"),
		"--config="+c.path("kubelet", "config.yaml"), "--kubeconfig="+c.path("kubeconfig-kubelet"),
		"--root-dir="+c.path("kubelet"), "--cert-dir="+c.path("kubelet", "pki"),
		"--hostname-override="+nodeName, "--node-ip="+c.NodeIP, "--v=1"); err != nil {
		return err
	}
	if err := waitContainerd(ctx, c); err != nil {
		return err
	}
	pause, err := writePauseImage(c.path("images", "pause.tar"))
	if err != nil {
		return err
	}
	for _, f := range append([]string{pause}, images...) {
		if err := importImage(ctx, c, f); err != nil {
			return err
		}
	}
	if err := waitNodeReady(ctx, c, admin); err != nil {
		return err
	}
	// The kubelet registers the node tainted not-ready; the node lifecycle
	// controller (kube-controller-manager, not run here) would lift it.
	if err := admin.do(ctx, http.MethodPatch, "/api/v1/nodes/"+nodeName, obj{"spec": obj{"taints": nil}}, nil); err != nil {
		return fmt.Errorf("untaint node: %w", err)
	}
	if err := smokePod(ctx, c, admin); err != nil {
		return err
	}
	c.Ready = true
	return c.save()
}

func writePKI(c *Cluster) error {
	ca, err := newCA(c.path("pki"))
	if err != nil {
		return err
	}
	loop := []net.IP{net.ParseIP("127.0.0.1")}
	svcIP := net.ParseIP(strings.Replace(strings.TrimSuffix(c.PodCIDR, "0/24")+"1", "198.18.", "198.19.", 1))
	specs := []certSpec{
		{name: "etcd", cn: "etcd", ips: loop, dns: []string{"localhost"}, server: true},
		{name: "apiserver-etcd-client", cn: "kube-apiserver-etcd-client", client: true},
		{name: "apiserver", cn: "kube-apiserver", server: true,
			ips: []net.IP{loop[0], net.ParseIP(c.NodeIP), svcIP},
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", client: true},
		{name: "kubelet-serving", cn: nodeName, ips: []net.IP{net.ParseIP(c.NodeIP)}, dns: []string{nodeName}, server: true},
		{name: "kubelet", cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}, client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
		{name: "admin", cn: "testcluster-admin", orgs: []string{"system:masters"}, client: true},
		{name: boxliteUser, cn: boxliteUser, client: true},
	}
	for _, s := range specs {
		if err := ca.issue(s); err != nil {
			return err
		}
	}
	if err := ca.serviceAccountKey(); err != nil {
		return err
	}
	for _, k := range [][3]string{
		{c.Kubeconfig, "admin", ""},
		{c.KubeconfigBoxlite, boxliteUser, namespace},
		{c.path("kubeconfig-kubelet"), "kubelet", ""},
		{c.path("kubeconfig-scheduler"), "scheduler", ""},
	} {
		if err := ca.kubeconfig(k[0], c.Server, k[1], k[2]); err != nil {
			return err
		}
	}
	return nil
}

// start runs one daemon in its own session with its output in
// logs/<name>.log and records it before anything else happens.
func start(c *Cluster, name, path string, args ...string) error {
	logf, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	id, err := proc.Of(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("%s exited at once (logs/%s.log)", name, name)
	}
	go func() { _ = cmd.Wait() }() // reap while up runs; init adopts it after
	c.Processes = append(c.Processes, Process{Name: name, ID: id})
	slog.Info("started", "name", name, "pid", id.PID)
	return c.save()
}

// alive fails when a daemon has exited.
func (c *Cluster) alive() error {
	for _, p := range c.Processes {
		if !p.Alive() {
			return fmt.Errorf("%s exited (DIR/logs/%s.log; up prints its tail)", p.Name, p.Name)
		}
	}
	return nil
}

func waitContainerd(ctx context.Context, c *Cluster) error {
	return poll(ctx, "containerd", 200*time.Millisecond, func() (bool, error) {
		if err := c.alive(); err != nil {
			return true, err
		}
		err := helper(ctx, "ctr", "--address", c.ContainerdSocket, "version").Run()
		return err == nil, err
	})
}

func waitNodeReady(ctx context.Context, c *Cluster, admin *apiClient) error {
	return poll(ctx, "node "+nodeName+" Ready", 500*time.Millisecond, func() (bool, error) {
		if err := c.alive(); err != nil {
			return true, err
		}
		var n struct {
			Status struct {
				Conditions []struct{ Type, Status, Message string } `json:"conditions"`
			} `json:"status"`
		}
		if err := admin.do(ctx, http.MethodGet, "/api/v1/nodes/"+nodeName, nil, &n); err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				return true, nil
			} else if cond.Type == "Ready" {
				return false, errors.New(cond.Message)
			}
		}
		return false, errors.New("no Ready condition yet")
	})
}

// smokePod runs a pod of the pause image and deletes it: the whole chain
// (scheduler, kubelet, containerd, runc, CNI) works once it is Running.
func smokePod(ctx context.Context, c *Cluster, admin *apiClient) error {
	pods := "/api/v1/namespaces/" + namespace + "/pods"
	pod := obj{"apiVersion": "v1", "kind": "Pod", "metadata": obj{"name": "testcluster-smoke"},
		"spec": obj{"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
			"containers": []any{obj{"name": "pause", "image": pauseRef, "imagePullPolicy": "Never"}}}}
	if err := admin.create(ctx, pods, pod); err != nil {
		return err
	}
	if _, err := admin.waitPod(ctx, namespace, "testcluster-smoke", "Running"); err != nil {
		return err
	}
	return admin.do(ctx, http.MethodDelete, pods+"/testcluster-smoke?gracePeriodSeconds=0", nil, nil)
}

// showLogs prints the last lines of every daemon's log to stderr.
func showLogs(c *Cluster) {
	ents, _ := os.ReadDir(c.path("logs"))
	for _, e := range ents {
		f, err := os.Open(c.path("logs", e.Name()))
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) > 15 {
				lines = lines[1:]
			}
		}
		f.Close()
		fmt.Fprintf(os.Stderr, "--- %s (last %s lines)\n%s\n", e.Name(), strconv.Itoa(len(lines)), strings.Join(lines, "\n"))
	}
}
