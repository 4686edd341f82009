package qemu

import (
	"context"
	"net"
	"os"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// RawBootArgs prepares spec's disk and initramfs and returns the QEMU
// arguments the engine would use unconfined, with the console on stdout,
// and the descriptors they name (ExtraFiles, in order) (benchmarks).
func RawBootArgs(e *Engine, spec sandbox.Spec, img *image.Image) ([]string, []*os.File, error) {
	if _, err := e.prepareDisk(context.Background(), spec, img); err != nil {
		return nil, nil, err
	}
	initrd, err := e.writeInitrd(spec, img, "serial:"+serialPort)
	if err != nil {
		return nil, nil, err
	}
	kvm, _ := e.accel()
	raw := &Engine{cfg: e.cfg, log: e.log}
	raw.cfg.Unconfined = true
	st := state{KVM: kvm, Channel: "serial", QMP: spec.Socket + ".qmp"}
	files, err := openVMFiles(spec, st, nil)
	if err != nil {
		return nil, nil, err
	}
	args := raw.commandLine(spec, img, st, initrd, files)
	for i, a := range args {
		if a == "chardev:con" {
			args[i] = "stdio"
		}
	}
	return args, files.list, nil
}

// QEMUPath is the QEMU binary the engine runs.
func QEMUPath(e *Engine) string { return e.cfg.QEMU }

// PID is the QEMU process of a handle.
func PID(h sandbox.Handle) int { st, _ := decodeState(h); return st.Proc.PID }

// SetVsockDialer replaces the vsock dialer until the returned func is called.
func SetVsockDialer(f func(ctx context.Context, cid, port uint32) (net.Conn, error)) (restore func()) {
	old := dialVsock
	dialVsock = f
	return func() { dialVsock = old }
}

// VsockHandle is a handle of a box reached over vsock at cid, run by p.
func VsockHandle(cid uint32, p proc.ID) sandbox.Handle {
	return encode(state{Proc: p, Channel: "vsock", CID: cid})
}
