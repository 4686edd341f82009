// Package k8s is the Kubernetes engine: a box is a Pod. An init container
// copies the static guest agent from the agent image into an emptyDir; the
// box's container (any OCI image) runs it as its first process, listening
// on the pod's loopback only; the server reaches it through the API
// server's pods/portforward, so it works from outside the cluster and is
// authorised by the cluster's own RBAC. The cluster is the source of truth
// (sandbox.Remote): a box made through one server is found by another
// through its labels; a named box's pod name is derived from owner and
// name, so the API's AlreadyExists keeps names unique across servers.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Name is the engine's name.
const Name = "k8s"

// AgentPort is where the agent listens on the pod's loopback.
const AgentPort = 7071

// AgentImageRepo is the repository of the agent image `boxlite-mcp k8s
// agent-image` writes by default; the CLI tags it with its version.
const AgentImageRepo = "boxlite-agent"

// Config configures the engine.
type Config struct {
	// Kubeconfig is the kubeconfig file; empty: the in-cluster config.
	Kubeconfig string
	// Namespace of the boxes; empty: the kubeconfig's (in a pod: its own).
	Namespace string
	// RuntimeClass, when set, is every box pod's runtimeClassName (kata,
	// gvisor...: the isolation the cluster provides).
	RuntimeClass string
	// AgentImage carries the static guest agent (required; the CLI's
	// default is AgentImageRepo tagged with its version).
	AgentImage string
	// DefaultImage runs when create_box names no image (required to
	// create boxes without one).
	DefaultImage string
	// StorageClass, when set, gives each box a PersistentVolumeClaim for
	// its files (mounted at its working directory's /workspace): then a
	// box can be stopped (its Pod deleted) and started again.
	StorageClass string
	// PullPolicy of the box and agent images (default IfNotPresent).
	PullPolicy string
	Logger     *slog.Logger
}

// Engine runs boxes as Kubernetes pods.
type Engine struct {
	cfg  Config
	rest *rest.Config
	cs   kubernetes.Interface
	ns   string
	log  *slog.Logger

	mu       sync.Mutex
	avail    sandbox.Availability
	availAt  time.Time
	policies string // what doctor found about NetworkPolicy enforcement
}

// New connects to the cluster the config names (no request is made yet).
func New(cfg Config) (*Engine, error) {
	if cfg.AgentImage == "" {
		return nil, errors.New("no agent image: name the image carrying the guest agent (--k8s-agent-image)")
	}
	if cfg.PullPolicy == "" {
		cfg.PullPolicy = "IfNotPresent"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, ref := range []string{cfg.AgentImage, cfg.DefaultImage} {
		if ref == "" {
			continue
		}
		if _, err := name.ParseReference(ref); err != nil {
			return nil, fmt.Errorf("image reference %q: %v", ref, err)
		}
	}
	var (
		rc  *rest.Config
		ns  = cfg.Namespace
		err error
	)
	if cfg.Kubeconfig == "" {
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a pod: %w", err)
		}
		if ns == "" {
			b, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
			ns = strings.TrimSpace(string(b))
		}
	} else {
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}, &clientcmd.ConfigOverrides{})
		if rc, err = cc.ClientConfig(); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
		}
		if ns == "" {
			ns, _, _ = cc.Namespace()
		}
	}
	if ns == "" {
		ns = "default"
	}
	rc.UserAgent = "boxlite-mcp"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, rest: rc, cs: cs, ns: ns, log: cfg.Logger.With("engine", Name)}, nil
}

// Name implements sandbox.Engine.
func (e *Engine) Name() string { return Name }

// Namespace is where the engine's boxes live.
func (e *Engine) Namespace() string { return e.ns }

// CanStop implements sandbox.Remote: only with a storage class does a
// stopped box keep its files.
func (e *Engine) CanStop() bool { return e.cfg.StorageClass != "" }

// ImageRef implements sandbox.Remote.
func (e *Engine) ImageRef(ref string) (string, error) {
	if ref == "" || ref == sandbox.DefaultImage {
		if e.cfg.DefaultImage == "" {
			return "", errors.New("this server's k8s engine has no default image: name an image, or start the server with --k8s-default-image")
		}
		return e.cfg.DefaultImage, nil
	}
	if _, err := name.ParseReference(ref); err != nil {
		return "", fmt.Errorf("image %q is not an OCI image reference: %v", ref, err)
	}
	return ref, nil
}

// Available implements sandbox.Engine: the API server answers and this
// identity may create pods and port-forward to them in the namespace. The
// answer is cached for 10 s (engine pick runs on every create_box).
func (e *Engine) Available(ctx context.Context) sandbox.Availability {
	e.mu.Lock()
	if time.Since(e.availAt) < 10*time.Second {
		a := e.avail
		e.mu.Unlock()
		return a
	}
	e.mu.Unlock()
	a := e.check(ctx)
	e.mu.Lock()
	e.avail, e.availAt = a, time.Now()
	e.mu.Unlock()
	return a
}

func (e *Engine) isolation() string {
	if e.cfg.RuntimeClass != "" {
		return "Kubernetes pod (runtime class " + e.cfg.RuntimeClass + ")"
	}
	return "Kubernetes pod (the cluster's default runtime: a container unless it is a VM runtime)"
}
