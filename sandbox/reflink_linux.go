package sandbox

import (
	"os"

	"golang.org/x/sys/unix"
)

// reflink makes out share in's blocks (FICLONE), where the file system can.
func reflink(out, in *os.File) bool {
	return unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil
}
