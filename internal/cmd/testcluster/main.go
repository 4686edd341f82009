// Command testcluster brings a real single-node Kubernetes cluster up and
// down on this machine for the k8s engine's tests: etcd, kube-apiserver,
// kube-scheduler, containerd (Debian's, with runc and the bridge and
// host-local CNI plugins) and a kubelet, everything under one directory,
// every listener on 127.0.0.1 or on a TEST-NET address of a dummy
// interface the tool creates. See docs/K8S-TEST-CLUSTER.md.
//
//	testcluster up --dir DIR --bin BINDIR [--image FILE.tar]...
//	testcluster down --dir DIR
//	testcluster import --dir DIR FILE.tar...
//	testcluster api --dir DIR METHOD PATH [JSON-BODY]
//
// up prints DIR/cluster.json (kubeconfig paths, namespace, runtime class,
// node name, pids) once the node is Ready and a test pod ran. down stops
// everything by recorded pids and removes what the cluster left on the
// host, also after a killed up; it is idempotent.
//
// The binary must be static (CGO_ENABLED=0): it is copied into the pod
// sandbox image and runs there as /pause.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if filepath.Base(os.Args[0]) == "pause" {
		pause()
		return
	}
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = cmdUp(args)
	case "down":
		err = cmdDown(args)
	case "import":
		err = cmdImport(args)
	case "api":
		err = cmdAPI(args)
	case "kubelet-ns": // hidden: runs the kubelet behind masked sysctls
		err = kubeletNS(args)
	case "echo": // hidden: the test image's program
		fmt.Println(strings.Join(args, " "))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testcluster:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  testcluster up --dir DIR --bin BINDIR [--image FILE.tar]...
  testcluster down --dir DIR
  testcluster import --dir DIR FILE.tar...
  testcluster api --dir DIR METHOD PATH [JSON-BODY]    (as the admin; prints the answer)`)
	os.Exit(2)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func cmdUp(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "directory for everything the cluster keeps (required)")
	bin := fs.String("bin", "", "directory with etcd, kube-apiserver, kube-scheduler, kubelet (integration/k8s/build.sh prints it)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up when the cluster is not ready by then")
	var images multi
	fs.Var(&images, "image", "docker-archive tarball to import (repeatable)")
	_ = fs.Parse(args)
	if *dir == "" || *bin == "" {
		return fmt.Errorf("up needs --dir and --bin")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, err := up(ctx, *dir, *bin, images)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	fmt.Println(string(b))
	return nil
}

func cmdDown(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", "", "the cluster's directory (required)")
	_ = fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("down needs --dir")
	}
	return down(*dir)
}

func cmdImport(args []string) error {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	dir := fs.String("dir", "", "the cluster's directory (required)")
	_ = fs.Parse(args)
	if *dir == "" || fs.NArg() == 0 {
		return fmt.Errorf("import needs --dir and at least one tarball")
	}
	c, err := loadDir(*dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, f := range fs.Args() {
		if err := importImage(ctx, c, f); err != nil {
			return err
		}
	}
	return nil
}

// cmdAPI sends one request as the cluster's admin and prints the answer's
// body (PATCH bodies are JSON merge patches); a non-2xx answer fails.
func cmdAPI(args []string) error {
	fs := flag.NewFlagSet("api", flag.ExitOnError)
	dir := fs.String("dir", "", "the cluster's directory (required)")
	_ = fs.Parse(args)
	if *dir == "" || fs.NArg() < 2 || fs.NArg() > 3 {
		return fmt.Errorf("api needs --dir, a method, a path and optionally a JSON body")
	}
	c, err := loadDir(*dir)
	if err != nil {
		return err
	}
	admin, err := newAPIClient(c.Server, c.path("pki", "ca.crt"), c.path("pki", "admin.crt"), c.path("pki", "admin.key"))
	if err != nil {
		return err
	}
	var body any
	if fs.NArg() == 3 {
		if !json.Valid([]byte(fs.Arg(2))) {
			return fmt.Errorf("the body is not JSON")
		}
		body = json.RawMessage(fs.Arg(2))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out string
	if err := admin.do(ctx, strings.ToUpper(fs.Arg(0)), fs.Arg(1), body, &out); err != nil {
		return err
	}
	fmt.Println(out)
	return nil
}

// pause is the pod sandbox's program: it sleeps until told to stop and
// reaps the children it inherits, like Kubernetes' pause.
func pause() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// loadDir reads the state of the cluster in dir.
func loadDir(dir string) (*Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return loadCluster(abs)
}
