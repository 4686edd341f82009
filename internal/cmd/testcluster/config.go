package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// freePort asks the kernel for a free loopback port. Another process may
// take it before the daemon binds it; up then fails with that daemon's log.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// containerdConfig is containerd 1.6's config: all state under DIR, the
// CRI plugin with this cluster's CNI network, runc's state under DIR, and
// restrict_oom_score_adj (no CAP_SYS_RESOURCE on these hosts).
func containerdConfig(c *Cluster) string {
	q := strconv.Quote
	return strings.Join([]string{
		`version = 2`,
		`root = ` + q(c.path("containerd", "root")),
		`state = ` + q(c.path("containerd", "state")),
		`disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]`,
		`[grpc]`,
		`  address = ` + q(c.ContainerdSocket),
		`[ttrpc]`,
		`  address = ""`,
		`[debug]`,
		`  address = ""`,
		`[metrics]`,
		`  address = ""`,
		`[plugins."io.containerd.internal.v1.opt"]`,
		`  path = ` + q(c.path("containerd", "opt")),
		`[plugins."io.containerd.grpc.v1.cri"]`,
		`  sandbox_image = ` + q(pauseRef),
		`  stream_server_address = "127.0.0.1"`,
		`  stream_server_port = "0"`,
		`  restrict_oom_score_adj = true`,
		`  netns_mounts_under_state_dir = true`,
		`  enable_selinux = false`,
		`  disable_apparmor = true`,
		`  [plugins."io.containerd.grpc.v1.cri".containerd]`,
		`    snapshotter = "overlayfs"`,
		`    default_runtime_name = "runc"`,
		`    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`,
		`      runtime_type = "io.containerd.runc.v2"`,
		`      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]`,
		`        Root = ` + q(c.path("containerd", "runc")),
		`        SystemdCgroup = false`,
		`  [plugins."io.containerd.grpc.v1.cri".cni]`,
		`    bin_dir = "/usr/lib/cni"`,
		`    conf_dir = ` + q(c.path("cni", "net.d")),
		`    max_conf_num = 1`,
		``,
	}, "\n")
}

// cniConfig is the pods' network: this cluster's bridge, addresses from
// host-local with its state under DIR, no gateway, no masquerade (the
// host's forwarding settings stay as they are).
func cniConfig(c *Cluster) any {
	base := strings.TrimSuffix(c.PodCIDR, "0/24")
	return map[string]any{
		"cniVersion": "0.4.0",
		"name":       c.CNINetwork,
		"plugins": []any{
			map[string]any{
				"type":      "bridge",
				"bridge":    c.Bridge,
				"isGateway": false,
				"ipMasq":    false,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": c.path("cni", "ipam"),
					"ranges": [][]map[string]string{{{
						"subnet": c.PodCIDR, "rangeStart": base + "10", "rangeEnd": base + "250",
					}}},
				},
			},
			map[string]any{"type": "loopback"},
		},
	}
}

// kubeletConfig is the KubeletConfiguration: x509 client auth, webhook
// authorization, listeners on the node IP and loopback only, no iptables
// chains in the host, this host's
// quirks (cgroup v1, swap, no CAP_SYS_RESOURCE) and no eviction or image
// garbage collection on a busy disk (the images cannot be pulled again).
func kubeletConfig(c *Cluster, port, healthz int) any {
	return map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            c.NodeIP,
		"port":               port,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        healthz,
		"tlsCertFile":        c.path("pki", "kubelet-serving.crt"),
		"tlsPrivateKeyFile":  c.path("pki", "kubelet-serving.key"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": c.path("pki", "ca.crt")},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               c.CgroupRoot,
		"cgroupsPerQOS":            true,
		"failCgroupV1":             false,
		"failSwapOn":               false,
		"oomScoreAdj":              0,
		"containerRuntimeEndpoint": "unix://" + c.ContainerdSocket,
		"imageServiceEndpoint":     "unix://" + c.ContainerdSocket,
		"podLogsDir":               c.path("pod-logs"),
		"resolvConf":               "",
		"serializeImagePulls":      false,
		"evictionHard": map[string]string{
			"memory.available": "0%", "nodefs.available": "0%", "nodefs.inodesFree": "0%",
			"imagefs.available": "0%", "imagefs.inodesFree": "0%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"maxPods":                     110,
		"nodeStatusUpdateFrequency":   "10s",
		"fileCheckFrequency":          "5s",
		"shutdownGracePeriod":         "0s",
		// Else the kubelet adds KUBE-FIREWALL and canary chains to the
		// host's iptables, and they outlive it.
		"makeIPTablesUtilChains": false,
	}
}

// rbacObjects are what up creates through the API: the namespace, the
// runtime class, the restricted user's roles and the API server's access
// to the kubelet.
func rbacObjects() [][2]any {
	role := func(kind, name, ns string, rules []any) obj {
		m := obj{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
			"metadata": obj{"name": name}, "rules": rules}
		if ns != "" {
			m["metadata"].(obj)["namespace"] = ns
		}
		return m
	}
	binding := func(kind, name, ns, roleKind, roleName, user string) obj {
		m := obj{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
			"metadata": obj{"name": name},
			"roleRef":  obj{"apiGroup": "rbac.authorization.k8s.io", "kind": roleKind, "name": roleName},
			"subjects": []any{obj{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}}}
		if ns != "" {
			m["metadata"].(obj)["namespace"] = ns
		}
		return m
	}
	all := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	nsRules := []any{
		obj{"apiGroups": []string{""}, "resources": []string{"pods", "persistentvolumeclaims"}, "verbs": all},
		obj{"apiGroups": []string{""}, "resources": []string{"pods/log"}, "verbs": []string{"get", "list", "watch"}},
		obj{"apiGroups": []string{""}, "resources": []string{"pods/portforward"}, "verbs": []string{"get", "create"}},
		obj{"apiGroups": []string{""}, "resources": []string{"events"}, "verbs": []string{"get", "list", "watch"}},
		obj{"apiGroups": []string{"events.k8s.io"}, "resources": []string{"events"}, "verbs": []string{"get", "list", "watch"}},
		obj{"apiGroups": []string{"networking.k8s.io"}, "resources": []string{"networkpolicies"}, "verbs": all},
	}
	clusterRules := []any{
		obj{"apiGroups": []string{"node.k8s.io"}, "resources": []string{"runtimeclasses"}, "verbs": []string{"get", "list", "watch"}},
		obj{"apiGroups": []string{""}, "resources": []string{"nodes"}, "verbs": []string{"get", "list", "watch"}},
		obj{"apiGroups": []string{"storage.k8s.io"}, "resources": []string{"storageclasses"}, "verbs": []string{"get", "list", "watch"}},
	}
	rbac := "/apis/rbac.authorization.k8s.io/v1"
	nsPath := "/api/v1/namespaces/" + namespace
	return [][2]any{
		{"/api/v1/namespaces", obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": namespace}}},
		{"/apis/node.k8s.io/v1/runtimeclasses", obj{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
			"metadata": obj{"name": runtimeClass}, "handler": "runc"}},
		{rbac + "/namespaces/" + namespace + "/roles", role("Role", "boxlite-engine", namespace, nsRules)},
		{rbac + "/namespaces/" + namespace + "/rolebindings", binding("RoleBinding", "boxlite-engine", namespace, "Role", "boxlite-engine", boxliteUser)},
		{rbac + "/clusterroles", role("ClusterRole", "boxlite-engine-cluster", "", clusterRules)},
		{rbac + "/clusterrolebindings", binding("ClusterRoleBinding", "boxlite-engine-cluster", "", "ClusterRole", "boxlite-engine-cluster", boxliteUser)},
		{rbac + "/clusterrolebindings", binding("ClusterRoleBinding", "testcluster-apiserver-kubelet", "", "ClusterRole", "system:kubelet-api-admin", "kube-apiserver-kubelet-client")},
		{nsPath + "/serviceaccounts", obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default"},
			"automountServiceAccountToken": false}},
	}
}

func portURL(scheme string, port int) string { return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port) }
