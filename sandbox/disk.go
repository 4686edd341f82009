package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// DiskFile is the name of a VM box's disk in its box directory: a qcow2
// overlay over the image's raw ext4.
const DiskFile = "disk.qcow2"

// CreateOverlay makes boxDir/disk.qcow2, a qcow2 overlay over the raw image
// base, with qemu-img. sizeMiB is the disk size the guest sees (0: the
// base's size); it may not be smaller than base. An existing disk is kept
// as it is (a box started again keeps its files). The disk appears whole or
// not at all: it is made under a temporary name and renamed.
//
// Errors carry their class: a full or over-quota host disk is
// ErrResourceExhausted, a size below the image's ErrInvalidArgument, a
// missing qemu-img ErrFailedPrecondition, anything else ErrInternal. The
// public text names no host path; qemu-img's output is in the cause.
func CreateOverlay(ctx context.Context, qemuImg, boxDir, base string, sizeMiB int) (string, error) {
	disk := filepath.Join(boxDir, DiskFile)
	if _, err := os.Stat(disk); err == nil {
		return disk, nil
	}
	if qemuImg == "" {
		return "", Errorf(ErrFailedPrecondition, "qemu-img is not installed on the server (apt-get install qemu-utils)")
	}
	fi, err := os.Stat(base)
	if err != nil {
		return "", Wrapf(ErrFailedPrecondition, err, "the image's disk is missing; rebuild the image")
	}
	args := []string{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", base}
	tmp := disk + ".tmp"
	args = append(args, tmp)
	if sizeMiB > 0 {
		if baseMiB := (fi.Size() + 1<<20 - 1) >> 20; int64(sizeMiB) < baseMiB {
			return "", Errorf(ErrInvalidArgument, "a disk of %d MiB is smaller than the image (%d MiB); ask for at least that", sizeMiB, baseMiB)
		}
		args = append(args, strconv.Itoa(sizeMiB)+"M")
	}
	out, err := exec.CommandContext(ctx, qemuImg, args...).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		cause := fmt.Errorf("qemu-img create: %w: %s", err, bytes.TrimSpace(out))
		if diskFull(out) {
			return "", Wrapf(ErrResourceExhausted, cause, "no space left on the server's disk for the box's disk; destroy boxes you no longer need")
		}
		if ctx.Err() != nil {
			return "", Wrapf(ErrDeadlineExceeded, cause, "creating the box's disk took too long")
		}
		return "", Wrapf(ErrInternal, cause, "cannot create the box's disk (see the server log)")
	}
	if err := os.Rename(tmp, disk); err != nil {
		os.Remove(tmp)
		return "", Wrapf(ErrInternal, err, "cannot create the box's disk (see the server log)")
	}
	return disk, nil
}

// diskFull reports whether qemu-img's output says it ran out of disk space
// or quota (it reports ENOSPC and EDQUOT only as text).
func diskFull(out []byte) bool {
	return bytes.Contains(out, []byte("No space left on device")) || bytes.Contains(out, []byte("Disk quota exceeded"))
}

// WriteEngineState records h in boxDir/engine.json, the file (and format)
// the manager also writes once a start succeeded. An engine calls it the
// moment its box process exists, before it waits for the agent: a server
// that dies during a start then leaves a record from which the next
// server's Recover, Stop and Destroy find that process and kill it, even
// though the registry row has no engine state yet. The write is atomic (a
// temporary file renamed into place); it is not fsynced, since a host crash
// ends the process too.
func WriteEngineState(boxDir string, h Handle) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(boxDir, "."+engineStateFile+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(boxDir, engineStateFile))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// ReadEngineState returns the handle recorded in boxDir (see
// WriteEngineState): a zero Handle and no error when there is none.
func ReadEngineState(boxDir string) (Handle, error) {
	var h Handle
	b, err := os.ReadFile(filepath.Join(boxDir, engineStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return h, err
	}
	return h, json.Unmarshal(b, &h)
}
