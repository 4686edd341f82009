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

// BenchmarkVMStart: start until the agent's hello, against a raw QEMU boot
// of the same kernel, initramfs and devices until the agent's first console
// line (it is up and about to serve), measured in the same run. The
// difference is the engine's overhead (target: under 15% of the raw boot).
func BenchmarkVMStart(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	e := qemu.New(qemu.Config{Home: home, DieWithParent: true})
	img, err := image.Locate(home, "default")
	if err != nil || img.Manifest.Kernel == nil {
		b.Skip("no VM image")
	}
	b.Run("baseline", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			spec := benchSpec(home)
			args, err := qemu.RawBootArgs(e, spec, img)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(qemu.QEMUPath(e), args...)
			out, _ := cmd.StdoutPipe()
			t := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "msg=serving") {
					break
				}
			}
			ds = append(ds, time.Since(t))
			cmd.Process.Kill()
			go io.Copy(io.Discard, out)
			cmd.Wait()
			os.RemoveAll(spec.BoxDir)
		}
		testenv.ReportP50(b, ds)
	})
	b.Run("engine", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			spec := benchSpec(home)
			t := time.Now()
			h, err := e.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t))
			e.Destroy(context.Background(), spec, h)
		}
		testenv.ReportP50(b, ds)
	})
}

// BenchmarkVMPython measures python3 -c 'print(1)' in a running VM and
// reports QEMU's resident memory against the guest memory in use.
func BenchmarkVMPython(b *testing.B) {
	testenv.RequireRoot(b)
	home := testenv.Home(b)
	e := qemu.New(qemu.Config{Home: home, DieWithParent: true})
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
	for b.Loop() {
		var out bytes.Buffer
		if _, err := c.Exec(context.Background(), req, client.ExecIO{Stdout: &out}); err != nil || out.String() != "1\n" {
			b.Fatal(err)
		}
	}
	// Guest RAM actually touched: everything not free, page cache included
	// (QEMU backs every page the guest ever wrote).
	var mem bytes.Buffer
	c.Exec(context.Background(), wire.ExecRequest{Argv: []string{"sh", "-c", "awk '/MemTotal|MemFree/{print $2}' /proc/meminfo"}}, client.ExecIO{Stdout: &mem})
	if f := strings.Fields(mem.String()); len(f) == 2 {
		total, _ := strconv.ParseFloat(f[0], 64)
		free, _ := strconv.ParseFloat(f[1], 64)
		touched := total - free
		rss := float64(vmRSS(qemu.PID(h)))
		b.ReportMetric(rss/1024, "qemu-rss-MiB")
		b.ReportMetric(touched/1024, "guest-touched-MiB")
		b.ReportMetric(rss/touched, "rss/touched")
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
