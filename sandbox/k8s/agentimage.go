package k8s

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// AgentImage is the agent image: one layer holding the static guest agent
// at /boxlite-guest (a box's init container runs it with --install). The
// layer's timestamps are fixed, so the same agent gives the same digest.
func AgentImage(agent string) (v1.Image, error) {
	b, err := os.ReadFile(agent)
	if err != nil {
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	if len(b) < 4 || string(b[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("guest agent %s is not an ELF binary", agent)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Name: "boxlite-guest", Mode: 0o755, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{"/boxlite-guest"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "boxlite-mcp guest agent"}
	return mutate.ConfigFile(img, cf)
}

// WriteAgentImage writes the agent image as a docker-archive tarball
// tagged ref, and returns its digest.
func WriteAgentImage(out, ref, agent string) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("--tag %q: %v", ref, err)
	}
	img, err := AgentImage(agent)
	if err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	d, err := img.Digest()
	return d.String(), err
}
