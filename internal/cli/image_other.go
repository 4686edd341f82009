//go:build !linux

package cli

import (
	"context"
	"errors"
	"io"
)

// imageBuild: images are built with mmdebstrap and mke2fs, on Linux.
func imageBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("image build needs a Linux host (mmdebstrap): run `boxlite-mcp image build` there and copy the image's directory (images/NAME in its home) into this host's home")
}
