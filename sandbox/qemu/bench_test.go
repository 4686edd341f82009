package qemu_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

func benchSpec(home string) sandbox.Spec {
	id := persist.NewID()
	dir := filepath.Join(home, "boxes", id)
	os.MkdirAll(dir, 0o700)
	os.MkdirAll(filepath.Join(home, "run"), 0o700)
	return sandbox.Spec{ID: id, Image: "default", CPUs: 1, MemoryMiB: 512, BoxDir: dir, Socket: filepath.Join(home, "run", id+".sock")}
}

// benchEngine is the qemu engine without a logger, its availability
// (KVM or TCG, and why) printed with the table.
func benchEngine(home string) *qemu.Engine {
	e := qemu.New(qemu.Config{Home: home, DieWithParent: true})
	bench.Env("engine qemu", e.Available(context.Background()).Reason)
	return e
}

// BenchmarkVMStart: start until the agent's hello, against a raw QEMU boot
// of the same kernel, initramfs and devices until the agent's first console
// line (it is up and about to serve), interleaved boot for boot. The
// difference is the engine's overhead (target: under 15% of the raw boot).
func BenchmarkVMStart(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	e := benchEngine(home)
	unconfined := qemu.New(qemu.Config{Home: home, DieWithParent: true, Unconfined: true})
	img, err := image.Locate(home, "default")
	if err != nil || img.Manifest.Kernel == nil {
		b.Skip("no VM image")
	}
	bench.Compare(b, 5,
		bench.Case{Name: "baseline", Op: func(b *testing.B) time.Duration {
			spec := benchSpec(home)
			defer os.RemoveAll(spec.BoxDir)
			args, files, err := qemu.RawBootArgs(e, spec, img)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				for _, f := range files {
					f.Close()
				}
			}()
			cmd := exec.Command(qemu.QEMUPath(e), args...)
			cmd.ExtraFiles = files
			out, _ := cmd.StdoutPipe()
			t := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			up := false
			for sc.Scan() {
				if up = strings.Contains(sc.Text(), "msg=serving"); up {
					break
				}
			}
			d := time.Since(t)
			cmd.Process.Kill()
			go io.Copy(io.Discard, out)
			cmd.Wait()
			if !up {
				b.Fatal("the raw boot ended before the agent served")
			}
			return d
		}},
		bench.Case{Name: "engine", Op: func(b *testing.B) time.Duration {
			spec := benchSpec(home)
			t := time.Now()
			h, err := e.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t)
			e.Destroy(context.Background(), spec, h)
			return d
		}},
		// What the VMM's confinement costs (target: under 10% of the boot).
		bench.Case{Name: "engine-unconfined", Op: func(b *testing.B) time.Duration {
			spec := benchSpec(home)
			t := time.Now()
			h, err := unconfined.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t)
			unconfined.Destroy(context.Background(), spec, h)
			return d
		}})
}

// BenchmarkVMPython: python3 -c 'print(1)' in a running VM against the same
// command on the host, interleaved; then QEMU's resident memory against the
// guest memory in use.
func BenchmarkVMPython(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	e := benchEngine(home)
	spec := benchSpec(home)
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		b.Skip(err)
	}
	defer e.Destroy(context.Background(), spec, h)
	conn, err := e.Dial(context.Background(), spec, h)
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(context.Background(), conn, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := wire.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}}
	bench.Compare(b, 10,
		bench.Case{Name: "baseline", Op: bench.Timed(func(b *testing.B) {
			if out, err := exec.Command("/usr/bin/python3", "-c", "print(1)").Output(); err != nil || string(out) != "1\n" {
				b.Fatal(err)
			}
		})},
		bench.Case{Name: "vm", Op: bench.Timed(func(b *testing.B) {
			var out bytes.Buffer
			if _, err := c.Exec(context.Background(), req, client.ExecIO{Stdout: &out}); err != nil || out.String() != "1\n" {
				b.Fatal(err)
			}
		})})
	// Guest RAM actually touched: everything not free, page cache included
	// (QEMU backs every page the guest ever wrote).
	var mem bytes.Buffer
	c.Exec(context.Background(), wire.ExecRequest{Argv: []string{"sh", "-c", "awk '/MemTotal|MemFree/{print $2}' /proc/meminfo"}}, client.ExecIO{Stdout: &mem})
	if f := strings.Fields(mem.String()); len(f) == 2 {
		total, _ := strconv.ParseFloat(f[0], 64)
		free, _ := strconv.ParseFloat(f[1], 64)
		touched := total - free
		rss := float64(vmRSS(qemu.PID(h)))
		bench.Report(b, "memory", map[string]float64{"qemu-rss-MiB": rss / 1024, "guest-touched-MiB": touched / 1024, "rss/touched": rss / touched})
	}
}

func vmRSS(pid int) int64 {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
