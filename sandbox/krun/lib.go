package krun

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>

// Trampolines: cgo cannot call C function pointers, so each libkrun
// signature we use gets one.
static int32_t k_void(void *f) { return ((int32_t (*)(void))f)(); }
static int32_t k_u32(void *f, uint32_t a) { return ((int32_t (*)(uint32_t))f)(a); }
static int32_t k_u32_u32(void *f, uint32_t a, uint32_t b) { return ((int32_t (*)(uint32_t, uint32_t))f)(a, b); }
static int32_t k_vm_config(void *f, uint32_t c, uint8_t cpus, uint32_t mib) {
	return ((int32_t (*)(uint32_t, uint8_t, uint32_t))f)(c, cpus, mib);
}
static int32_t k_str(void *f, uint32_t c, const char *s) { return ((int32_t (*)(uint32_t, const char *))f)(c, s); }
static int32_t k_disk2(void *f, uint32_t c, const char *id, const char *path, uint32_t fmt, bool ro) {
	return ((int32_t (*)(uint32_t, const char *, const char *, uint32_t, bool))f)(c, id, path, fmt, ro);
}
static int32_t k_remount(void *f, uint32_t c, const char *dev, const char *fstype, const char *opts) {
	return ((int32_t (*)(uint32_t, const char *, const char *, const char *))f)(c, dev, fstype, opts);
}
static int32_t k_vsock_port2(void *f, uint32_t c, uint32_t port, const char *path, bool listen) {
	return ((int32_t (*)(uint32_t, uint32_t, const char *, bool))f)(c, port, path, listen);
}
static int32_t k_exec(void *f, uint32_t c, const char *path, char **argv, char **envp) {
	return ((int32_t (*)(uint32_t, const char *, char *const *, char *const *))f)(c, path, argv, envp);
}
static int32_t k_strv(void *f, uint32_t c, char **v) { return ((int32_t (*)(uint32_t, char *const *))f)(c, v); }
static const char *k_dlerror(void) { return dlerror(); }
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

// Symbols the engine needs, and the libkrun release that first has each.
var required = map[string]string{
	"krun_set_log_level":         "0.1",
	"krun_create_ctx":            "0.1",
	"krun_set_vm_config":         "0.1",
	"krun_add_disk2":             "1.10",
	"krun_set_root_disk_remount": "1.15",
	"krun_add_vsock_port2":       "1.10",
	"krun_set_exec":              "0.1",
	"krun_set_workdir":           "0.1",
	"krun_set_rlimits":           "0.1",
	"krun_set_console_output":    "1.8",
	"krun_start_enter":           "0.1",
}

// Symbols needed only for boxes without network (1.17).
var noNetwork = []string{"krun_disable_implicit_vsock", "krun_add_vsock"}

// Disk formats of krun_add_disk2.
const (
	DiskRaw   = 0
	DiskQcow2 = 1
)

// ErrMissingSymbol means the library is too old for a call.
var ErrMissingSymbol = errors.New("libkrun too old")

// Lib is libkrun loaded with dlopen. Methods report the C function and its
// return code on failure.
type Lib struct {
	path string
	h    unsafe.Pointer
	syms map[string]unsafe.Pointer
}

// LibName is libkrun's file name on this OS.
func LibName() string {
	if runtime.GOOS == "darwin" {
		return "libkrun.1.dylib"
	}
	return "libkrun.so.1"
}

// Open loads libkrun from path (a file name is searched the usual way:
// LD_LIBRARY_PATH, the cache, the default directories).
func Open(path string) (*Lib, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("dlopen %s: %s", path, C.GoString(C.k_dlerror()))
	}
	l := &Lib{path: path, h: h, syms: map[string]unsafe.Pointer{}}
	for name := range required {
		l.lookup(name)
	}
	for _, name := range noNetwork {
		l.lookup(name)
	}
	return l, nil
}

func (l *Lib) lookup(name string) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	if p := C.dlsym(l.h, cname); p != nil {
		l.syms[name] = p
	}
}

// Missing lists the required symbols the library lacks, with the release
// that added each.
func (l *Lib) Missing() []string {
	var out []string
	for name, since := range required {
		if l.syms[name] == nil {
			out = append(out, fmt.Sprintf("%s (libkrun %s)", name, since))
		}
	}
	return out
}

// CanDisableNetwork reports whether the library can run a VM without network (1.17+).
func (l *Lib) CanDisableNetwork() bool {
	for _, n := range noNetwork {
		if l.syms[n] == nil {
			return false
		}
	}
	return true
}

func (l *Lib) fn(name string) (unsafe.Pointer, error) {
	if p := l.syms[name]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %s has no %s", ErrMissingSymbol, l.path, name)
}

// check turns a libkrun return code into an error naming the function.
func check(name string, rc C.int32_t) error {
	if rc >= 0 {
		return nil
	}
	return fmt.Errorf("%s failed: %d (%v)", name, int32(rc), syscall.Errno(-rc))
}

func (l *Lib) call(name string, f func(unsafe.Pointer) C.int32_t) error {
	p, err := l.fn(name)
	if err != nil {
		return err
	}
	return check(name, f(p))
}

// SetLogLevel sets libkrun's log level (0 off … 5 trace).
func (l *Lib) SetLogLevel(level uint32) error {
	return l.call("krun_set_log_level", func(p unsafe.Pointer) C.int32_t { return C.k_u32(p, C.uint32_t(level)) })
}

// CreateCtx makes a configuration context.
func (l *Lib) CreateCtx() (uint32, error) {
	p, err := l.fn("krun_create_ctx")
	if err != nil {
		return 0, err
	}
	rc := C.k_void(p)
	if err := check("krun_create_ctx", rc); err != nil {
		return 0, err
	}
	return uint32(rc), nil
}

// SetVMConfig sets vCPUs and RAM.
func (l *Lib) SetVMConfig(ctx uint32, cpus uint8, mib uint32) error {
	return l.call("krun_set_vm_config", func(p unsafe.Pointer) C.int32_t {
		return C.k_vm_config(p, C.uint32_t(ctx), C.uint8_t(cpus), C.uint32_t(mib))
	})
}

// AddDisk2 adds a disk with an explicit format (never probed).
func (l *Lib) AddDisk2(ctx uint32, id, path string, format uint32, readOnly bool) error {
	cid, cpath := C.CString(id), C.CString(path)
	defer C.free(unsafe.Pointer(cid))
	defer C.free(unsafe.Pointer(cpath))
	return l.call("krun_add_disk2", func(p unsafe.Pointer) C.int32_t {
		return C.k_disk2(p, C.uint32_t(ctx), cid, cpath, C.uint32_t(format), C.bool(readOnly))
	})
}

// SetRootDiskRemount boots from a block device (e.g. /dev/vda).
func (l *Lib) SetRootDiskRemount(ctx uint32, device, fstype, options string) error {
	cdev, cfs := C.CString(device), C.CString(fstype)
	defer C.free(unsafe.Pointer(cdev))
	defer C.free(unsafe.Pointer(cfs))
	var copts *C.char
	if options != "" {
		copts = C.CString(options)
		defer C.free(unsafe.Pointer(copts))
	}
	return l.call("krun_set_root_disk_remount", func(p unsafe.Pointer) C.int32_t {
		return C.k_remount(p, C.uint32_t(ctx), cdev, cfs, copts)
	})
}

// DisableImplicitVsock removes the default vsock device (and its TSI network).
func (l *Lib) DisableImplicitVsock(ctx uint32) error {
	return l.call("krun_disable_implicit_vsock", func(p unsafe.Pointer) C.int32_t { return C.k_u32(p, C.uint32_t(ctx)) })
}

// AddVsock adds the vsock device with TSI features (0: IPC only, no network).
func (l *Lib) AddVsock(ctx, tsiFeatures uint32) error {
	return l.call("krun_add_vsock", func(p unsafe.Pointer) C.int32_t { return C.k_u32_u32(p, C.uint32_t(ctx), C.uint32_t(tsiFeatures)) })
}

// AddVsockPort2 maps a guest vsock port to a unix socket; with listen,
// libkrun listens on path and forwards host connections to the guest.
func (l *Lib) AddVsockPort2(ctx, port uint32, path string, listen bool) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	return l.call("krun_add_vsock_port2", func(p unsafe.Pointer) C.int32_t {
		return C.k_vsock_port2(p, C.uint32_t(ctx), C.uint32_t(port), cpath, C.bool(listen))
	})
}

// cStrings makes a NULL-terminated char* array; free it with the returned func.
func cStrings(ss []string) (**C.char, func()) {
	arr := C.malloc(C.size_t(len(ss)+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
	view := unsafe.Slice((**C.char)(arr), len(ss)+1)
	for i, s := range ss {
		view[i] = C.CString(s)
	}
	view[len(ss)] = nil
	return (**C.char)(arr), func() {
		for i := range ss {
			C.free(unsafe.Pointer(view[i]))
		}
		C.free(arr)
	}
}

// SetExec sets the workload: path, its arguments (argv[0] excluded, as
// libkrun's init supplies it) and an explicit environment (never NULL,
// which would copy the host's environment into the guest).
func (l *Lib) SetExec(ctx uint32, path string, args, env []string) error {
	if env == nil {
		env = []string{}
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	argv, freeArgv := cStrings(args)
	defer freeArgv()
	envp, freeEnv := cStrings(env)
	defer freeEnv()
	return l.call("krun_set_exec", func(p unsafe.Pointer) C.int32_t { return C.k_exec(p, C.uint32_t(ctx), cpath, argv, envp) })
}

// SetWorkdir sets the workload's working directory.
func (l *Lib) SetWorkdir(ctx uint32, dir string) error {
	c := C.CString(dir)
	defer C.free(unsafe.Pointer(c))
	return l.call("krun_set_workdir", func(p unsafe.Pointer) C.int32_t { return C.k_str(p, C.uint32_t(ctx), c) })
}

// SetRlimits sets resource limits, "ID=cur:max" each.
func (l *Lib) SetRlimits(ctx uint32, limits []string) error {
	v, free := cStrings(limits)
	defer free()
	return l.call("krun_set_rlimits", func(p unsafe.Pointer) C.int32_t { return C.k_strv(p, C.uint32_t(ctx), v) })
}

// SetConsoleOutput sends the guest console to a file.
func (l *Lib) SetConsoleOutput(ctx uint32, path string) error {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	return l.call("krun_set_console_output", func(p unsafe.Pointer) C.int32_t { return C.k_str(p, C.uint32_t(ctx), c) })
}

// StartEnter boots the VM on this thread. It returns only on an error
// before boot; when the guest ends, libkrun exits the whole process.
func (l *Lib) StartEnter(ctx uint32) error {
	return l.call("krun_start_enter", func(p unsafe.Pointer) C.int32_t { return C.k_u32(p, C.uint32_t(ctx)) })
}
