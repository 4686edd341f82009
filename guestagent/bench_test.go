package guestagent_test

import (
	"context"
	"os/exec"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// BenchmarkExecTrue/agent is an exec round trip of /bin/true over a unix
// socket; BenchmarkExecTrue/baseline is fork+exec of /bin/true in this process,
// the baseline measured in the same run. Target: agent under 2x direct.
func BenchmarkExecTrue(b *testing.B) {
	b.Run("baseline", func(b *testing.B) { // fork+exec of /bin/true in this process
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("agent", func(b *testing.B) {
		c, _ := agent(b)
		req := wire.ExecRequest{Argv: []string{"/bin/true"}}
		for b.Loop() {
			if _, err := c.Exec(context.Background(), req, client.ExecIO{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStdoutStream streams 100 MiB of stdout through the agent; the
// MB/s column is the throughput (target: at least 300 MiB/s).
func BenchmarkStdoutStream(b *testing.B) {
	const size = 100 << 20
	c, _ := agentWith(b, guestagent.Config{OutputLimit: size})
	req := wire.ExecRequest{Argv: []string{"head", "-c", "104857600", "/dev/zero"}, OutputLimit: size}
	b.SetBytes(size)
	for b.Loop() {
		res, err := c.Exec(context.Background(), req, client.ExecIO{})
		if err != nil || res.Truncated || res.StdoutBytes != size {
			b.Fatalf("%+v %v", res, err)
		}
	}
}
