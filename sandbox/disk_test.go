package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeQemuImg writes a qemu-img stand-in that logs its arguments to log and
// then runs body (a shell snippet; "$tmp" is the file it was asked to make).
func fakeQemuImg(t *testing.T, log, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu-img")
	script := "#!/bin/sh\necho \"$@\" >> " + log + "\nfor a; do case $a in *.tmp) tmp=$a;; esac; done\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateOverlay(t *testing.T) {
	const baseMiB = 4
	for _, tt := range []struct {
		name     string
		body     string // the fake qemu-img's behaviour
		sizeMiB  int
		existing bool // a disk is already there
		noTool   bool
		noBase   bool
		class    error  // nil: success
		args     string // the arguments qemu-img must get ("" with success: not called)
	}{
		{name: "image size", body: `: > "$tmp"`, args: "create -q -f qcow2 -F raw -b BASE DISK.tmp"},
		{name: "disk_mib honoured", body: `: > "$tmp"`, sizeMiB: 8192, args: "create -q -f qcow2 -F raw -b BASE DISK.tmp 8192M"},
		{name: "existing disk kept", body: "exit 1", existing: true},
		{name: "host disk full", body: `: > "$tmp"; echo "qemu-img: $tmp: Could not write qcow2 header: No space left on device" >&2; exit 1`,
			class: ErrResourceExhausted, args: "create"},
		{name: "quota", body: `echo "qemu-img: $tmp: Disk quota exceeded" >&2; exit 1`, class: ErrResourceExhausted, args: "create"},
		{name: "other failure", body: `echo "qemu-img: $tmp: Permission denied" >&2; exit 1`, class: ErrInternal, args: "create"},
		{name: "smaller than the image", body: `: > "$tmp"`, sizeMiB: baseMiB - 1, class: ErrInvalidArgument},
		{name: "no qemu-img", noTool: true, class: ErrFailedPrecondition},
		{name: "no image disk", body: `: > "$tmp"`, noBase: true, class: ErrFailedPrecondition},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, log := t.TempDir(), filepath.Join(t.TempDir(), "calls")
			base := filepath.Join(t.TempDir(), "rootfs.ext4")
			if !tt.noBase {
				if err := os.WriteFile(base, make([]byte, baseMiB<<20), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tool := ""
			if !tt.noTool {
				tool = fakeQemuImg(t, log, tt.body)
			}
			disk := filepath.Join(dir, DiskFile)
			if tt.existing {
				os.WriteFile(disk, []byte("old"), 0o600)
			}
			got, err := CreateOverlay(context.Background(), tool, dir, base, tt.sizeMiB)
			calls, _ := os.ReadFile(log)
			want := strings.NewReplacer("BASE", base, "DISK", disk).Replace(tt.args)
			if !strings.HasPrefix(strings.TrimSpace(string(calls)), want) || (want == "" && len(calls) > 0) {
				t.Errorf("qemu-img called with %q, want %q", calls, want)
			}
			if tt.class == nil {
				if err != nil || got != disk {
					t.Fatalf("CreateOverlay = %q, %v", got, err)
				}
				if _, err := os.Stat(disk); err != nil {
					t.Fatalf("no disk: %v", err)
				}
				if tt.existing {
					if b, _ := os.ReadFile(disk); string(b) != "old" {
						t.Fatalf("existing disk replaced: %q", b)
					}
				}
				return
			}
			if !errors.Is(err, tt.class) || Class(err) != tt.class {
				t.Fatalf("error %v has class %v, want %v", err, Class(err), tt.class)
			}
			if msg := PublicMessage(err); strings.Contains(msg, dir) || strings.Contains(msg, base) || strings.Contains(msg, "qemu-img:") {
				t.Errorf("public message leaks detail: %q", msg)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) > 0 {
				t.Errorf("a failed create left %v", left)
			}
		})
	}
}

// TestCreateOverlayQemuImg checks the real qemu-img makes the disk the size asked for over the image.
func TestCreateOverlayQemuImg(t *testing.T) {
	tool, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	base := filepath.Join(t.TempDir(), "rootfs.ext4")
	os.WriteFile(base, make([]byte, 1<<20), 0o644)
	disk, err := CreateOverlay(context.Background(), tool, dir, base, 64)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "info", "--output=json", disk).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		VirtualSize   int64  `json:"virtual-size"`
		Format        string `json:"format"`
		BackingFile   string `json:"backing-filename"`
		BackingFormat string `json:"backing-filename-format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != 64<<20 || info.Format != "qcow2" || info.BackingFile != base || info.BackingFormat != "raw" {
		t.Fatalf("disk %+v", info)
	}
}
