package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
)

// Fixed names the k8s engine's tests rely on.
const (
	namespace    = "boxlite"
	runtimeClass = "boxlite-test-runc"
	nodeName     = "boxlite-test-node"
	pauseRef     = "boxlite.test/testcluster/pause:1"
	boxliteUser  = "boxlite-test-user"
)

// Cluster is DIR/cluster.json: what tests read, and what down needs to
// clean up. It is written as soon as each host resource is claimed, so a
// killed up leaves a record down can act on.
type Cluster struct {
	Dir               string `json:"dir"`
	Server            string `json:"server,omitempty"`
	Kubeconfig        string `json:"kubeconfig"`
	KubeconfigBoxlite string `json:"kubeconfig_boxlite"`
	Namespace         string `json:"namespace"`
	RuntimeClass      string `json:"runtime_class"`
	Node              string `json:"node"`
	NodeIP            string `json:"node_ip,omitempty"`
	PodCIDR           string `json:"pod_cidr,omitempty"`
	ContainerdSocket  string `json:"containerd_socket"`
	PauseImage        string `json:"pause_image"`
	// Slot numbers the host-wide names below so clusters can coexist.
	Slot       int    `json:"slot,omitempty"`
	Bridge     string `json:"bridge,omitempty"`
	Dummy      string `json:"dummy,omitempty"`
	CgroupRoot string `json:"cgroup_root,omitempty"`
	CNINetwork string `json:"cni_network,omitempty"`
	// SharedMount: DIR is bind-mounted on itself as a shared mount.
	SharedMount bool `json:"shared_mount,omitempty"`
	// Processes in start order; down stops them in reverse.
	Processes []Process `json:"processes"`
	Ready     bool      `json:"ready"`
}

// Process is one daemon of the cluster.
type Process struct {
	Name string `json:"name"`
	proc.ID
}

func newCluster(dir string) *Cluster {
	return &Cluster{
		Dir:               dir,
		Kubeconfig:        filepath.Join(dir, "kubeconfig"),
		KubeconfigBoxlite: filepath.Join(dir, "kubeconfig-boxlite"),
		Namespace:         namespace,
		RuntimeClass:      runtimeClass,
		Node:              nodeName,
		ContainerdSocket:  filepath.Join(dir, "containerd.sock"),
		PauseImage:        pauseRef,
	}
}

// setSlot fills the host-wide names of slot n.
func (c *Cluster) setSlot(n int) {
	c.Slot = n
	c.Dummy = fmt.Sprintf("bltc%dd", n)
	c.Bridge = fmt.Sprintf("bltc%db", n)
	c.CgroupRoot = fmt.Sprintf("/boxlite-testcluster-%d", n)
	c.CNINetwork = fmt.Sprintf("boxlite-testcluster-%d", n)
	c.NodeIP = fmt.Sprintf("192.0.2.%d", n)
	c.PodCIDR = fmt.Sprintf("198.18.%d.0/24", n)
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

func stateFile(dir string) string { return filepath.Join(dir, "cluster.json") }

// save writes cluster.json atomically.
func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := stateFile(c.Dir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, stateFile(c.Dir))
}

func loadCluster(dir string) (*Cluster, error) {
	b, err := os.ReadFile(stateFile(dir))
	if err != nil {
		return nil, err
	}
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile(dir), err)
	}
	if c.Dir != dir {
		return nil, fmt.Errorf("%s describes %s, not %s", stateFile(dir), c.Dir, dir)
	}
	return &c, nil
}
