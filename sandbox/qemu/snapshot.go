package qemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Snapshots of a qemu box hold its memory and device state as well as its
// disk. Snapshot pauses the VM (QMP stop: vCPUs halt, QEMU drains and
// flushes the disk), migrates its state into a file handed over the QMP
// socket (QMP getfd + migrate "fd:"), copies the qcow2 overlay while the
// VM is still paused (a reflink or a sparse copy: the overlay holds only
// what the box changed), keeps the box's initramfs (the new QEMU must load
// the same boot files), and resumes the VM (QMP cont). The disk copy and
// the memory are of the same instant.
//
// A clone gets a new qcow2 overlay backed by the snapshot's disk, and a
// QEMU with the same devices started with -incoming from the memory file
// (fd 3); QEMU resumes the VM once the state is in. The agent is then told
// its new identity (wire.OpClone) before the box is handed out: host name,
// environment, clock, RNG seed, network.

const (
	snapMemory = "memory.state"
	snapInitrd = "initrd.cpio"
)

var _ sandbox.Snapshotter = (*Engine)(nil)

// ClonesShareFiles implements sandbox.Snapshotter: a clone's overlay is
// backed by the snapshot's disk.
func (e *Engine) ClonesShareFiles() bool { return true }

// Snapshot implements sandbox.Snapshotter.
func (e *Engine) Snapshot(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, dir string) (bool, error) {
	st, err := decodeState(h)
	if err != nil {
		return false, err
	}
	if !st.Proc.Alive() {
		return false, sandbox.Errorf(sandbox.ErrFailedPrecondition, "box %s is not running", spec.ID)
	}
	q, err := dialQMP(ctx, st.QMP)
	if err != nil {
		return false, fmt.Errorf("qmp: %w", err)
	}
	defer q.Close()
	t0 := time.Now()
	if _, err := q.do("stop", nil); err != nil {
		return false, err
	}
	// Whatever happens next, the box runs on.
	defer func() {
		if _, err := q.do("cont", nil); err != nil {
			e.log.Error("resuming the VM after a snapshot failed", "box_id", spec.ID, "err", err)
		}
	}()
	mem, err := os.OpenFile(filepath.Join(dir, snapMemory), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	defer mem.Close()
	if err := q.sendFD("snapshot", mem); err != nil {
		return false, fmt.Errorf("handing the memory file to qemu: %w", err)
	}
	if _, err := q.do("migrate", map[string]any{"uri": "fd:snapshot"}); err != nil {
		return false, err
	}
	if err := q.waitMigration(ctx); err != nil {
		return false, err
	}
	tMem := time.Now()
	if err := mem.Sync(); err != nil {
		return false, err
	}
	if _, err := sandbox.CopyFileCoW(ctx, filepath.Join(spec.BoxDir, sandbox.DiskFile), filepath.Join(dir, sandbox.DiskFile)); err != nil {
		return false, fmt.Errorf("copying the disk: %w", err)
	}
	if _, err := sandbox.CopyFileCoW(ctx, filepath.Join(spec.BoxDir, "initrd.cpio"), filepath.Join(dir, snapInitrd)); err != nil {
		return false, fmt.Errorf("copying the boot files: %w", err)
	}
	// Clones' confined QEMUs read the disk as a backing file: they get
	// this group (the parent's range, never two boxes' at once) for it.
	if base, err := spec.HostIDBase(); err == nil {
		disk := filepath.Join(dir, sandbox.DiskFile)
		if err := os.Chown(disk, 0, int(base)); err != nil {
			return false, fmt.Errorf("handing the disk to clones: %w", err)
		}
		os.Chmod(disk, 0o640)
	}
	e.log.Info("vm snapshot", "box_id", spec.ID, "t_memory", tMem.Sub(t0), "t_paused", time.Since(t0))
	return true, nil
}

// cloneDisk gives a box made from a snapshot its overlay, backed by the
// snapshot's disk, at its first start, and returns the memory file to
// resume from ("" when the box starts cold: no memory in the snapshot, or
// not the first start).
func (e *Engine) cloneDisk(ctx context.Context, spec sandbox.Spec) (string, error) {
	src := spec.FromSnapshot
	disk := filepath.Join(spec.BoxDir, sandbox.DiskFile)
	if _, err := os.Stat(disk); err == nil {
		return "", nil
	}
	tmp := disk + ".tmp"
	os.Remove(tmp)
	out, err := exec.CommandContext(ctx, e.cfg.QemuImg, "create", "-q", "-f", "qcow2", "-F", "qcow2",
		"-b", filepath.Join(src.Dir, sandbox.DiskFile), tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", sandbox.Wrapf(sandbox.ErrInternal, fmt.Errorf("qemu-img create: %w: %s", err, strings.TrimSpace(string(out))), "cannot create the box's disk from the snapshot")
	}
	if err := os.Rename(tmp, disk); err != nil {
		return "", sandbox.Wrapf(sandbox.ErrInternal, err, "cannot create the box's disk from the snapshot")
	}
	if !src.Memory {
		return "", nil
	}
	return filepath.Join(src.Dir, snapMemory), nil
}

// giveIdentity tells a resumed clone's agent who it is now.
func (e *Engine) giveIdentity(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	conn, err := e.Dial(ctx, spec, h)
	if err != nil {
		return err
	}
	c, err := client.New(ctx, conn, "boxlite-mcp/qemu-clone")
	if err != nil {
		return err
	}
	defer c.Close()
	if !c.Hello().Has(wire.CapClone) {
		return sandbox.Errorf(sandbox.ErrFailedPrecondition, "the snapshot's guest agent is too old to be cloned; take a new snapshot of a box started with this boxlite-mcp")
	}
	seed := make([]byte, 64)
	rand.Read(seed)
	return c.Clone(ctx, wire.CloneReq{Hostname: spec.Hostname(), Env: spec.GuestEnv(), TimeUnixNano: time.Now().UnixNano(), Seed: seed})
}

// qmp is a QMP connection (capabilities negotiated).
type qmp struct {
	c *net.UnixConn
	r *bufio.Reader
}

func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &qmp{c: c.(*net.UnixConn), r: bufio.NewReader(c)}
	q.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.r.ReadString('\n'); err != nil { // greeting
		c.Close()
		return nil, err
	}
	if _, err := q.do("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) Close() error { return q.c.Close() }

// do runs one command and returns its "return" value; events are skipped.
func (q *qmp) do(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	return q.send(cmd, b, nil)
}

// sendFD hands f to QEMU under name (QMP getfd with the descriptor as
// SCM_RIGHTS ancillary data).
func (q *qmp) sendFD(name string, f *os.File) error {
	b, _ := json.Marshal(map[string]any{"execute": "getfd", "arguments": map[string]any{"fdname": name}})
	_, err := q.send("getfd", b, unix.UnixRights(int(f.Fd())))
	return err
}

func (q *qmp) send(cmd string, b, oob []byte) (json.RawMessage, error) {
	q.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := q.c.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
		return nil, err
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		}
		return resp.Return, nil
	}
}

// waitMigration polls query-migrate until the migration completed or failed.
func (q *qmp) waitMigration(ctx context.Context) error {
	for d := 5 * time.Millisecond; ; d = min(d*2, 100*time.Millisecond) {
		raw, err := q.do("query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		json.Unmarshal(raw, &st)
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			q.do("migrate_cancel", nil)
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// resumeIncoming waits until a QEMU started with -incoming has read the
// whole state, then resumes the VM: QEMU leaves it paused because the
// snapshot was taken of a paused VM.
func resumeIncoming(ctx context.Context, qmpPath string) error {
	var q *qmp
	for d := 5 * time.Millisecond; ; d = min(d*2, 100*time.Millisecond) {
		var err error
		if q, err = dialQMP(ctx, qmpPath); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qmp: %w (%v)", ctx.Err(), err)
		case <-time.After(d):
		}
	}
	defer q.Close()
	for d := 5 * time.Millisecond; ; d = min(d*2, 100*time.Millisecond) {
		raw, err := q.do("query-status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(raw, &st)
		switch st.Status {
		case "running":
			return nil
		case "paused", "postmigrate", "prelaunch":
			_, err := q.do("cont", nil)
			return err
		case "inmigrate":
		default:
			return fmt.Errorf("the VM is %s after reading the snapshot", st.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// resumePaused resumes a VM that a snapshot paused (best effort: the
// caller holds the box's lock, so no snapshot is under way).
func resumePaused(ctx context.Context, qmpPath string) {
	q, err := dialQMP(ctx, qmpPath)
	if err != nil {
		return
	}
	defer q.Close()
	raw, err := q.do("query-status", nil)
	if err != nil {
		return
	}
	var st struct {
		Status string `json:"status"`
	}
	json.Unmarshal(raw, &st)
	if st.Status == "paused" || st.Status == "postmigrate" || st.Status == "finish-migrate" {
		q.do("migrate_cancel", nil)
		q.do("cont", nil)
	}
}
