package guestagent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// hangGuard bounds a call that the old code never finished (a FIFO open
// blocks forever); it is a guard against hanging the suite, not a timing
// assertion.
const hangGuard = 20 * time.Second

// mkfifo makes a FIFO in dir and, at cleanup, opens it for writing once so
// that any reader still stuck in open(2) is released.
func mkfifo(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	return p
}

func wantCode(t *testing.T, what string, err error, code wire.Code) {
	t.Helper()
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != code {
		t.Errorf("%s = %v; want code %s", what, err, code)
	}
}

// TestReadFileRefusesSpecialFiles: read_file reads regular files only; a
// FIFO (which blocked the open until the client gave up), a device that
// never ends, a socket or a directory is refused at once with a clear error.
func TestReadFileRefusesSpecialFiles(t *testing.T) {
	c, dir := agent(t)
	fifo := mkfifo(t, dir, "fifo")
	os.Symlink(fifo, filepath.Join(dir, "link-to-fifo"))
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct {
		path string
		code wire.Code
		msg  string // in the message
	}{
		{fifo, wire.CodeInvalid, "named pipe"},
		{filepath.Join(dir, "link-to-fifo"), wire.CodeInvalid, "named pipe"},
		{"/dev/zero", wire.CodeInvalid, "character device"},
		{"/dev/urandom", wire.CodeInvalid, "character device"},
		{sock, wire.CodeInvalid, "not a regular file"},
		{dir, wire.CodeIsDir, "directory"},
	}
	for _, tt := range tests {
		for _, max := range []int64{0, 100} {
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			_, err := c.ReadFile(ctx, wire.ReadFileReq{Path: tt.path, MaxBytes: max}, io.Discard)
			cancel()
			wantCode(t, "ReadFile("+tt.path+")", err, tt.code)
			if err != nil && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ReadFile(%s) = %v; want the message to say %q", tt.path, err, tt.msg)
			}
		}
	}
	// Regular files, through a symlink too, still read.
	os.WriteFile(filepath.Join(dir, "f"), []byte("abc"), 0o644)
	os.Symlink("f", filepath.Join(dir, "link-to-f"))
	var out strings.Builder
	if _, err := c.ReadFile(context.Background(), wire.ReadFileReq{Path: filepath.Join(dir, "link-to-f")}, &out); err != nil || out.String() != "abc" {
		t.Fatalf("read through a symlink = %q, %v", out.String(), err)
	}
}

// TestWriteFileRefusesSpecialFiles: write_file replaces regular files; a
// FIFO, socket or device node in its place is left alone with a clear error.
func TestWriteFileRefusesSpecialFiles(t *testing.T) {
	c, dir := agent(t)
	fifo := mkfifo(t, dir, "fifo")
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	targets := []string{fifo, sock}
	dev := filepath.Join(dir, "null")
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, 1<<8|3); err == nil { // a /dev/null twin
		targets = append(targets, dev)
	} else {
		t.Logf("no device node test: %v", err)
	}
	for _, p := range targets {
		before, _ := os.Lstat(p)
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		_, err := c.WriteFile(ctx, wire.WriteFileReq{Path: p, Size: 1}, strings.NewReader("x"))
		cancel()
		wantCode(t, "WriteFile("+p+")", err, wire.CodeInvalid)
		if after, err := os.Lstat(p); err != nil {
			t.Errorf("WriteFile(%s) removed the %v", p, before.Mode())
		} else if after.Mode() != before.Mode() {
			t.Errorf("WriteFile(%s) replaced the %v by a %v", p, before.Mode(), after.Mode())
		}
	}
}

// TestListDirOnFIFO: list_dir of a FIFO fails at once (its open blocked).
func TestListDirOnFIFO(t *testing.T) {
	c, dir := agent(t)
	fifo := mkfifo(t, dir, "fifo")
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	_, _, err := c.ListDir(ctx, fifo)
	wantCode(t, "ListDir(fifo)", err, wire.CodeNotDir)
}
