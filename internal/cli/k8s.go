package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/k8s"
)

// k8sFlags configure the Kubernetes engine (serve and doctor).
type k8sFlags struct {
	kubeconfig, namespace, runtimeClass, agentImage, defaultImage, storageClass *string
}

func addK8sFlags(fs *flag.FlagSet) *k8sFlags {
	return &k8sFlags{
		kubeconfig:   fs.String("kubeconfig", "", "kubeconfig of the cluster the k8s engine runs boxes on (default with --engine k8s: the in-cluster config)"),
		namespace:    fs.String("k8s-namespace", "", "namespace of the boxes' pods (default: the kubeconfig's)"),
		runtimeClass: fs.String("k8s-runtime-class", "", "runtime class of the boxes' pods, e.g. kata or gvisor (default: the cluster's default runtime)"),
		agentImage:   fs.String("k8s-agent-image", defaultAgentImage(), "image carrying the guest agent (see `boxlite-mcp k8s agent-image`)"),
		defaultImage: fs.String("k8s-default-image", "", "image of k8s boxes whose create_box names none"),
		storageClass: fs.String("k8s-storage-class", "", "storage class of a claim per box for its files; with it k8s boxes can be stopped (idle stop) and keep their files"),
	}
}

// engine is the k8s engine the flags ask for: with want ("--engine k8s"),
// or when a kubeconfig is given; nil otherwise.
func (f *k8sFlags) engine(log *slog.Logger, want bool) (sandbox.Engine, error) {
	if !want && *f.kubeconfig == "" {
		return nil, nil
	}
	e, err := k8s.New(k8s.Config{Kubeconfig: *f.kubeconfig, Namespace: *f.namespace, RuntimeClass: *f.runtimeClass,
		AgentImage: *f.agentImage, DefaultImage: *f.defaultImage, StorageClass: *f.storageClass, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("k8s engine: %w", err)
	}
	return e, nil
}

// withK8s adds the k8s engine to engs as the flags say (last: "auto"
// prefers this host's engines), or makes it the only one.
func withK8s(engs []sandbox.Engine, f *k8sFlags, log *slog.Logger, only string) ([]sandbox.Engine, error) {
	e, err := f.engine(log, only == k8s.Name)
	if err != nil || e == nil {
		return engs, err
	}
	if only == k8s.Name {
		return []sandbox.Engine{e}, nil
	}
	return append(engs, e), nil
}

// k8sCmd is `boxlite-mcp k8s ...`.
func k8sCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "agent-image" {
		return usageError{"usage: boxlite-mcp k8s agent-image [--tag REF] [--out FILE]"}
	}
	fs := flag.NewFlagSet("k8s agent-image", flag.ContinueOnError)
	tag := fs.String("tag", defaultAgentImage(), "the image's reference (what --k8s-agent-image names)")
	out := fs.String("out", "boxlite-agent.tar", "where to write the image (a docker-archive tarball: `ctr -n k8s.io images import FILE`, `docker load -i FILE`)")
	agent := fs.String("agent", "", "the static guest agent to put in (default: boxlite-guest next to this binary)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"--out is required"}
	}
	path := *agent
	if path == "" {
		var err error
		if path, err = siblingAgent(); err != nil {
			return err
		}
	}
	digest, err := k8s.WriteAgentImage(*out, *tag, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s, %s)\nload it with `ctr -n k8s.io images import %s` on each node, or push it; serve with --k8s-agent-image %s\n", *out, *tag, digest, *out, *tag)
	return nil
}

var errNoAgent = errors.New("no boxlite-guest next to this binary: build it (make build) or pass --agent")

// siblingAgent is the boxlite-guest installed next to this binary.
func siblingAgent() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", errNoAgent
	}
	p := filepath.Join(filepath.Dir(exe), "boxlite-guest")
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return "", errNoAgent
	}
	return p, nil
}

// defaultAgentImage is the agent image this version writes and runs by default.
func defaultAgentImage() string { return k8s.AgentImageRepo + ":" + Version }
