package qemu

import (
	"context"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Wait implements sandbox.Engine: it waits on the VMM process.
func (e *Engine) Wait(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := decodeState(h)
	if err != nil {
		return err
	}
	return st.Proc.Exited(ctx)
}
