package k8s_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/enginetest"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/k8s"
)

// The tests and benchmarks here run on the real single-node cluster of
// internal/cmd/testcluster, brought up by `make test-k8s` (and `make
// bench`), which sets K8S_CLUSTER to its directory. Without it they skip.

type clusterInfo struct {
	Kubeconfig        string `json:"kubeconfig"`
	KubeconfigBoxlite string `json:"kubeconfig_boxlite"`
	Namespace         string `json:"namespace"`
	RuntimeClass      string `json:"runtime_class"`
}

func cluster(tb testing.TB) clusterInfo {
	tb.Helper()
	dir := os.Getenv("K8S_CLUSTER")
	if dir == "" {
		tb.Skip("K8S_CLUSTER is not set: `make test-k8s` brings a cluster up and sets it")
	}
	var c clusterInfo
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func engine(tb testing.TB, c clusterInfo) *k8s.Engine {
	tb.Helper()
	e, err := k8s.New(k8s.Config{Kubeconfig: c.KubeconfigBoxlite, Namespace: c.Namespace, AgentImage: agentImage(), DefaultImage: "test/plain:1"})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func agentImage() string {
	if s := os.Getenv("K8S_AGENT_IMAGE"); s != "" {
		return s
	}
	return "boxlite-agent:test"
}

func admin(tb testing.TB, c clusterInfo) kubernetes.Interface {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		tb.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(rc)
}

func manager(tb testing.TB, eng sandbox.Engine) *sandbox.Manager {
	tb.Helper()
	home := tb.TempDir()
	st, err := persist.Open(context.Background(), filepath.Join(home, "boxlite.db"))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := sandbox.New(sandbox.Config{Home: home, Store: st, Engines: []sandbox.Engine{eng}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if bs, err := m.AllBoxes(ctx); err == nil {
			for _, b := range bs {
				m.Destroy(ctx, b.Owner, b.ID)
			}
		}
		m.Close()
		st.Close()
	})
	return m
}

// A second server's create of a name the first already holds fails with
// AlreadyExists, and its clean-up of that failed create must not delete the
// first server's pod (its pod name is the same by design).
func TestNameCollisionAcrossServersKeepsTheOtherBox(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	a, b := manager(t, engine(t, c)), manager(t, engine(t, c))
	box, err := a.Create(ctx, "alice", sandbox.CreateRequest{Name: "shared-name", Engine: k8s.Name})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Create(ctx, "alice", sandbox.CreateRequest{Name: "shared-name", Engine: k8s.Name})
	if !errors.Is(err, sandbox.ErrAlreadyExists) {
		t.Fatalf("second create of the name: %v (want ErrAlreadyExists)", err)
	}
	res, _, err := a.Exec(ctx, "alice", box.ID, sandbox.ExecRequest{Argv: []string{"echo", "still-here"}}, sandbox.ExecIO{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the first box after the collision: %+v %v", res, err)
	}
	// Another owner may use the same name: pod names differ per owner.
	other, err := b.Create(ctx, "bob", sandbox.CreateRequest{Name: "shared-name", Engine: k8s.Name})
	if err != nil {
		t.Fatalf("another owner's box of the same name: %v", err)
	}
	b.Destroy(ctx, "bob", other.ID)
}

// Wait returns once the pod is deleted behind the engine's back, and
// Recover then says the box is not running.
func TestPodDeletedExternally(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	e := engine(t, c)
	// With network: the API server validates the public-egress policy too.
	spec := sandbox.Spec{ID: persist.NewID(), Owner: "alice", Image: "test/plain:1", CPUs: 1, MemoryMiB: 256, DiskMiB: 512, Network: true, BoxDir: t.TempDir()}
	h, err := e.Start(ctx, spec)
	if err != nil {
		e.Destroy(ctx, spec, h)
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Destroy(context.Background(), spec, h) })
	if err := e.Recover(ctx, spec, h); err != nil {
		t.Fatalf("Recover of a running box: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- e.Wait(ctx, spec, h) }()
	zero := int64(0)
	if err := admin(t, c).CoreV1().Pods(c.Namespace).Delete(ctx, "box-"+spec.ID, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Wait did not return after the pod was deleted")
	}
	if err := e.Recover(ctx, spec, h); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Fatalf("Recover after the pod's deletion: %v (want ErrNotRunning)", err)
	}
}

// BenchmarkK8sCreate: create_box until the first print(1) in the default
// Python session has answered, then destroy (untimed): a jail box (the
// baseline, this host) against a k8s box (a pod on the single-node test
// cluster, reached through the API server's port-forward).
func BenchmarkK8sCreate(b *testing.B) {
	testenv.RequireRoot(b)
	c := cluster(b)
	jailHome := testenv.Home(b)
	je := jail.New(jail.Config{Home: jailHome})
	if a := je.Available(context.Background()); !a.Usable {
		b.Skip("jail: " + a.Reason)
	}
	ke := engine(b, c)
	if a := ke.Available(context.Background()); !a.Usable {
		b.Fatal("k8s: " + a.Reason)
	}
	jm, km := manager(b, je), manager(b, ke)
	bench.Env("k8s", "single-node test cluster (containerd, runc) on this host")
	bench.Compare(b, 4,
		bench.Case{Name: "baseline", Op: func(b *testing.B) time.Duration {
			return enginetest.CreateFirstPrint(b, jm, sandbox.CreateRequest{Engine: "jail"})
		}},
		bench.Case{Name: "k8s", Op: func(b *testing.B) time.Duration {
			return enginetest.CreateFirstPrint(b, km, sandbox.CreateRequest{Engine: k8s.Name})
		}})
}
