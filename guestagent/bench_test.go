package guestagent_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
)

// benchAgent serves an agent on a unix socket without logging (a test
// logger in the hot path would be part of the figure).
func benchAgent(b *testing.B, cfg guestagent.Config) *client.Client {
	b.Helper()
	sock := filepath.Join(b.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.PowerOff = func(bool) {}
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv := guestagent.NewServer(cfg)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, l) }()
	b.Cleanup(func() { cancel(); <-done })
	return dial(b, sock)
}

// BenchmarkExecTrue/agent is an exec round trip of /bin/true over a unix
// socket; BenchmarkExecTrue/baseline is fork+exec of /bin/true in this
// process, interleaved with it. Target: agent under 2x direct.
func BenchmarkExecTrue(b *testing.B) {
	c := benchAgent(b, guestagent.Config{OutputLimit: 1 << 20})
	req := wire.ExecRequest{Argv: []string{"/bin/true"}}
	bench.Compare(b, 15,
		bench.Case{Name: "baseline", Op: bench.Batch(20, func(b *testing.B) {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		})},
		bench.Case{Name: "agent", Op: bench.Batch(20, func(b *testing.B) {
			if _, err := c.Exec(context.Background(), req, client.ExecIO{}); err != nil {
				b.Fatal(err)
			}
		})})
}

// BenchmarkStdoutStream streams 100 MiB of stdout through the agent, against
// the same command read through a plain pipe in this process (the
// baseline); MB/s is the throughput (target: at least 300 MB/s).
func BenchmarkStdoutStream(b *testing.B) {
	const size = 100 << 20
	argv := []string{"head", "-c", "104857600", "/dev/zero"}
	c := benchAgent(b, guestagent.Config{OutputLimit: size})
	req := wire.ExecRequest{Argv: argv, OutputLimit: size}
	bench.Compare(b, 9,
		bench.Case{Name: "baseline", Bytes: size, Op: bench.Timed(func(b *testing.B) {
			cmd := exec.Command(argv[0], argv[1:]...)
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, out)
			if werr := cmd.Wait(); err != nil || werr != nil || n != size {
				b.Fatalf("%d bytes: %v %v", n, err, werr)
			}
		})},
		bench.Case{Name: "agent", Bytes: size, Op: bench.Timed(func(b *testing.B) {
			res, err := c.Exec(context.Background(), req, client.ExecIO{})
			if err != nil || res.Truncated || res.StdoutBytes != size {
				b.Fatalf("%+v %v", res, err)
			}
		})})
}
