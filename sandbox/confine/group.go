package confine

import (
	"os"
	"syscall"
)

// fileGroup is fi's owner group.
func fileGroup(fi os.FileInfo) (uint32, bool) {
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Gid, true
}
