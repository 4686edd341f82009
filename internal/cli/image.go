//go:build linux

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

func imageBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image build", flag.ContinueOnError)
	var (
		name   = fs.String("name", "default", "image name")
		home   = fs.String("home", defaultHome(), "boxlite home directory")
		agent  = fs.String("agent", "", "boxlite-guest binary (default: next to this executable)")
		mirror = fs.String("mirror", "", "Debian archive to build from, e.g. http://MIRROR/debian (default: the one the host's apt sources use)")
		force  = fs.Bool("force", false, "rebuild even if the image exists")
		pkgs   = fs.String("packages", "", "extra Debian packages to install, comma-separated (a,b,c); an image built with another list is rebuilt")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *mirror != "" {
		if err := image.CheckMirror(*mirror); err != nil {
			return usageError{"--mirror: " + err.Error()}
		}
	}
	packages := append([]string{}, image.DefaultPackages...)
	if *pkgs != "" {
		extra := strings.Split(*pkgs, ",")
		for i := range extra {
			extra[i] = strings.TrimSpace(extra[i])
		}
		if err := image.CheckPackages(extra); err != nil {
			return usageError{"--packages: " + err.Error()}
		}
		packages = append(packages, extra...)
	}
	if *agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*agent = filepath.Join(filepath.Dir(exe), "boxlite-guest")
	}
	if _, err := os.Stat(*agent); err != nil {
		return fmt.Errorf("guest agent %s not found (build it with `make build`, or pass --agent)", *agent)
	}
	log, _ := newLogger(stderr, "info")
	cfg := image.BuildConfig{Home: *home, Name: *name, Agent: *agent, AgentVersion: guestagent.Version,
		Mirror: *mirror, Packages: packages, Force: *force, Progress: stdout, Logger: log}
	vmImage(&cfg)
	img, err := image.Build(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "image %q ready at %s\n", img.Name, img.Dir)
	return nil
}
