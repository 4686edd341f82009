package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// KernelMeta is the Debian package whose kernel VMs boot.
const KernelMeta = "linux-image-cloud-amd64"

// wantedModules are the modules the agent loads at boot (dependencies are
// added): the virtio MMIO transport, the root disk, the serial agent
// channel, vsock, and the network device.
var wantedModules = []string{"virtio_mmio", "virtio_blk", "virtio_console", "vmw_vsock_virtio_transport", "virtio_net"}

// KernelStep is the image build step that adds vmlinuz and initramfs.cpio:
// the kernel of Debian's cloud kernel package (downloaded and unpacked, not
// installed on the host) and an initramfs with the guest agent as /init and
// the modules it loads.
func KernelStep(agent string) func(ctx context.Context, dir string, step func(string) func()) (*image.Kernel, error) {
	return func(ctx context.Context, dir string, step func(string) func()) (*image.Kernel, error) {
		work, err := os.MkdirTemp(dir, ".kernel-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
		download := func() error {
			pkg, err := kernelPackage(ctx)
			if err != nil {
				return err
			}
			cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
			cmd.Dir = work
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get download %s failed: %v\n%s", pkg, err, tail(out))
			}
			return nil
		}
		if err := download(); err != nil {
			// Stale or missing package lists: refresh them once and retry.
			done := step("refreshing the package lists (apt-get update)")
			if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
				return nil, fmt.Errorf("%v; apt-get update failed too: %v\n%s", err, uerr, tail(out))
			}
			done()
			if err := download(); err != nil {
				return nil, err
			}
		}
		pkg, _ := kernelPackage(ctx)
		debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
		if len(debs) != 1 {
			return nil, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
		}
		version, err := exec.CommandContext(ctx, "dpkg-deb", "-f", debs[0], "Version").Output()
		if err != nil {
			return nil, fmt.Errorf("dpkg-deb: %w", err)
		}
		x := filepath.Join(work, "x")
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], x).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg -x: %v\n%s", err, tail(out))
		}
		vmlinuz, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
		rels, _ := os.ReadDir(filepath.Join(x, "lib", "modules"))
		if len(vmlinuz) != 1 || len(rels) != 1 {
			return nil, fmt.Errorf("package %s has no single kernel (vmlinuz %d, module trees %d)", pkg, len(vmlinuz), len(rels))
		}
		release := rels[0].Name()
		kernelData, err := os.ReadFile(vmlinuz[0])
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), kernelData, 0o644); err != nil {
			return nil, err
		}
		mods, err := resolveModules(filepath.Join(x, "lib", "modules", release), wantedModules)
		if err != nil {
			return nil, err
		}
		// The modules are kept in the image so the initramfs can be rebuilt
		// when only the agent changes.
		modDir := filepath.Join(dir, "modules")
		if err := os.MkdirAll(modDir, 0o755); err != nil {
			return nil, err
		}
		var paths []string
		for _, m := range mods {
			data, err := os.ReadFile(m.path)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(modDir, m.name+".ko"), data, 0o644); err != nil {
				return nil, err
			}
			paths = append(paths, "/lib/modules/"+m.name+".ko")
		}
		initrdSHA, err := WriteInitramfs(dir, agent, paths)
		if err != nil {
			return nil, err
		}
		return &image.Kernel{Package: pkg, Version: strings.TrimSpace(string(version)), Release: release, Modules: paths,
			VmlinuzSHA: sha(kernelData), InitrdSHA: initrdSHA}, nil
	}
}

// WriteInitramfs writes dir/initramfs.cpio: the agent as /init and the
// modules (kept in dir/modules) at their paths, and returns its sha256.
func WriteInitramfs(dir, agent string, modules []string) (string, error) {
	agentData, err := os.ReadFile(agent)
	if err != nil {
		return "", fmt.Errorf("guest agent: %w", err)
	}
	var buf bytes.Buffer
	w := &cpioWriter{w: &buf}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "newroot", "lib", "lib/modules", "boxlite"} {
		w.Dir(d, 0o755)
	}
	w.File("init", 0o755, agentData)
	for _, p := range modules {
		data, err := os.ReadFile(filepath.Join(dir, "modules", filepath.Base(p)))
		if err != nil {
			return "", fmt.Errorf("module %s: %w", p, err)
		}
		w.File(p, 0o644, data)
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, "initramfs.cpio.tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return sha(buf.Bytes()), os.Rename(tmp, filepath.Join(dir, "initramfs.cpio"))
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}

// kernelPackage resolves the cloud kernel metapackage to the exact package.
func kernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", KernelMeta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w (is this a Debian host with apt lists? run apt-get update)", KernelMeta, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			return dep, nil
		}
	}
	return "", fmt.Errorf("%s depends on no linux-image package (run apt-get update)", KernelMeta)
}

type module struct {
	name string // with underscores
	path string
	deps []string
}

// resolveModules finds wanted modules under root (lib/modules/<release>) and
// returns them with their dependencies, dependencies first. Dependencies come
// from each module's .modinfo "depends=" entry (the package has no modules.dep).
func resolveModules(root string, wanted []string) ([]module, error) {
	byName := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			byName[normalize(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var order []module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string) error
	visit = func(name string) error {
		name = normalize(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		p, ok := byName[name]
		if !ok {
			return fmt.Errorf("module %s not found in the kernel package (built in?)", name)
		}
		state[name] = 1
		deps, err := moduleDeps(p)
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, module{name: name, path: p, deps: deps})
		return nil
	}
	w := append([]string{}, wanted...)
	sort.Strings(w)
	for _, n := range w {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// moduleDeps reads "depends=" from a module's .modinfo section.
func moduleDeps(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
