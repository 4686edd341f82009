//go:build !linux

package cli

import (
	"context"
	"io"
	"log/slog"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// imageCmd: OCI images are unpacked with Linux-only primitives (openat2).
func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "build" {
		return imageBuild(ctx, args[1:], stdout, stderr)
	}
	return usageError{"OCI image commands need a Linux host: pull or import the image there and copy its directory (images/NAME in its home) into this host's home"}
}

// imageSource: without OCI support, images are used by name only.
func imageSource(home string, st *persist.Store, pull string, allow []string, tenants bool, log *slog.Logger) (sandbox.ImageSource, error) {
	return nil, nil
}
