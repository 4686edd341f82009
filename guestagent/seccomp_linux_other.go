//go:build !amd64 && !arm64

package guestagent

import (
	"fmt"
	"runtime"
)

// loadSeccompFilter refuses to start a jail on architectures the profile
// has no table for, rather than starting it unconfined.
func loadSeccompFilter() error {
	return fmt.Errorf("no seccomp profile for %s: the jail needs amd64 or arm64 (or the engine's NoSeccomp)", runtime.GOARCH)
}

func confineProcess(keep []int) error { return loadSeccompFilter() }
