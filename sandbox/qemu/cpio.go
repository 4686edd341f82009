package qemu

import (
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// cpioWriter writes a "newc" (SVR4, no CRC) cpio archive, the format the
// Linux kernel unpacks as an initramfs. Entries need no parents written
// first only if the kernel creates them, so callers add directories first.
type cpioWriter struct {
	w     io.Writer
	ino   uint32
	err   error
	total int64
}

func (c *cpioWriter) header(name string, mode uint32, size int64) {
	if c.err != nil {
		return
	}
	c.ino++
	// 110-byte header: magic + 13 eight-digit hex fields.
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(h))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *cpioWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.total += int64(n)
	c.err = err
}

// pad aligns to 4 bytes.
func (c *cpioWriter) pad() {
	if r := c.total % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) {
	c.header(strings.TrimPrefix(name, "/"), 0o040000|uint32(perm.Perm()), 0)
}

// File adds a regular file with the given contents.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) {
	c.header(strings.TrimPrefix(name, "/"), 0o100000|uint32(perm.Perm()), int64(len(data)))
	c.write(data)
	c.pad()
}

// Close writes the trailer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0)
	return c.err
}
