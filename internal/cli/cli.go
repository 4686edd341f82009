// Package cli implements the boxlite-mcp command line: serve, image build,
// doctor and version. cmd/boxlite-mcp only calls Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/tools"
)

// Version is the boxlite-mcp version.
var Version = tools.Version

const usage = `boxlite-mcp: disposable, isolated Linux boxes for AI agents, over MCP.

Usage:
  boxlite-mcp serve [--transport stdio|http|sse] [--listen 127.0.0.1:7070] [--home DIR]
                    [--engine auto|krun|qemu|jail] [--token-file FILE] [--allow-origin ORIGIN]...
                    [--stop-boxes-on-exit] [--idle-timeout 15m] [--log-level info]
                    [--pull missing|never|always] [--allow-image PATTERN]...
  boxlite-mcp image build [--name default] [--home DIR] [--agent PATH] [--mirror URL] [--force]
  boxlite-mcp image pull REF [--name NAME]      # any OCI/Docker image, e.g. python:3.12-slim
  boxlite-mcp image import FILE|DIR --name NAME # docker save tarball, OCI layout dir or tarball
  boxlite-mcp image list | rm NAME | prune
  boxlite-mcp doctor [--home DIR]
  boxlite-mcp version

The home directory is --home, else $BOXLITE_HOME, else $XDG_DATA_HOME/boxlite
(~/.local/share/boxlite).
`

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 && hiddenCommands[args[1]] != nil {
		hiddenCommands[args[1]]() // exits; the krun shim never returns from the VM
		return 125
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[1] {
	case "serve":
		err = serve(ctx, args[2:], stderr)
	case "image":
		err = imageCmd(ctx, args[2:], stdout, stderr)
	case "k8s":
		err = k8sCmd(ctx, args[2:], stdout)
	case "doctor":
		err = doctor(ctx, args[2:], stdout)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "boxlite-mcp", Version)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[1], usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, err)
			return 2
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "boxlite-mcp:", err)
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// defaultHome resolves the home directory.
func defaultHome() string {
	if h := os.Getenv("BOXLITE_HOME"); h != "" {
		return h
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "boxlite")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/var/lib"
	}
	return filepath.Join(home, ".local", "share", "boxlite")
}

// newLogger logs text to w (stderr: stdout may be the MCP transport).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}
