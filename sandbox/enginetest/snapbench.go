package enginetest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/bench"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// BenchSnapshots compares, on m's engine, in interleaved rounds: a cold
// create until the first result of `python3 -c print(1)` (the baseline),
// a create from a snapshot until that first result, and the save of a
// snapshot of a running box; and reports the snapshot's size. The parent
// has run Python once, so a memory snapshot holds a warm box.
func BenchSnapshots(b *testing.B, m *sandbox.Manager, rounds int, req sandbox.CreateRequest) {
	ctx := context.Background()
	first := func(b *testing.B, box string) {
		var out bytes.Buffer
		res, _, err := m.Exec(ctx, "bench", box, sandbox.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}, TimeoutMs: 120_000}, sandbox.ExecIO{Stdout: &out, Stderr: &out})
		if err != nil || res.ExitCode != 0 || out.String() != "1\n" {
			b.Fatalf("first run: %v %+v %q", err, res, out.String())
		}
	}
	// session is run_code's path: the box's default Python session.
	session := func(b *testing.B, box string) {
		var out bytes.Buffer
		_, _, err := m.RunSession(ctx, "bench", box, sandbox.SessionRequest{Name: "default", Language: "python", TimeoutMs: 120_000},
			"print(1)", sandbox.SessionIO{Stdout: &out, Stderr: &out})
		if err != nil || out.String() != "1\n" {
			b.Fatalf("session run: %v %q", err, out.String())
		}
	}
	parent, err := m.Create(ctx, "bench", req)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Destroy(ctx, "bench", parent.ID)
	first(b, parent.ID)
	session(b, parent.ID) // a memory snapshot holds the live session
	sn, err := m.SnapshotBox(ctx, "bench", parent.ID, "")
	if err != nil {
		b.Fatal(err)
	}
	defer m.DeleteSnapshot(ctx, "bench", sn.ID)
	var createAnd func(req sandbox.CreateRequest, run func(*testing.B, string)) func(b *testing.B) time.Duration
	createAndRun := func(req sandbox.CreateRequest) func(b *testing.B) time.Duration {
		return createAnd(req, first)
	}
	createAnd = func(req sandbox.CreateRequest, run func(*testing.B, string)) func(b *testing.B) time.Duration {
		return func(b *testing.B) time.Duration {
			t := time.Now()
			box, err := m.Create(ctx, "bench", req)
			if err != nil {
				b.Fatal(err)
			}
			run(b, box.ID)
			d := time.Since(t)
			if _, err := m.Destroy(ctx, "bench", box.ID); err != nil {
				b.Fatal(err)
			}
			return d
		}
	}
	clone := req
	clone.FromSnapshot = sn.ID
	clone.Image, clone.Engine, clone.CPUs, clone.MemoryMiB, clone.DiskMiB = "", "", 0, 0, 0
	bench.Compare(b, rounds,
		bench.Case{Name: "baseline", Op: createAndRun(req)},
		bench.Case{Name: "from-snapshot", Op: createAndRun(clone)},
		bench.Case{Name: "snapshot-save", Op: func(b *testing.B) time.Duration {
			t := time.Now()
			s, err := m.SnapshotBox(ctx, "bench", parent.ID, "")
			d := time.Since(t)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.DeleteSnapshot(ctx, "bench", s.ID); err != nil {
				b.Fatal(err)
			}
			return d
		}, Bytes: sn.Bytes},
	)
	// The same through run_code's session: a memory snapshot's clone
	// answers from the session it restored; a cold box starts one.
	bench.Compare(b, rounds,
		bench.Case{Name: "session-cold", Op: createAnd(req, session)},
		bench.Case{Name: "session-from-snapshot", Op: createAnd(clone, session)},
	)
	bench.Report(b, "snapshot-size", map[string]float64{"MiB": float64(sn.Bytes) / (1 << 20)})
}

// CreateFirstPrint times a create of req and the first print(1) of the
// box's default Python session (what an agent waits for), then destroys
// the box (untimed).
func CreateFirstPrint(b *testing.B, m *sandbox.Manager, req sandbox.CreateRequest) time.Duration {
	ctx := context.Background()
	t := time.Now()
	box, err := m.Create(ctx, "bench", req)
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	res, _, err := m.RunSession(ctx, "bench", box.ID, sandbox.SessionRequest{Name: sandbox.DefaultSession, Language: sandbox.LangPython}, "print(1)", sandbox.SessionIO{Stdout: &out})
	d := time.Since(t)
	if err != nil || res.Error != nil || out.String() != "1\n" {
		b.Fatalf("print(1): %q, %+v, %v", out.String(), res, err)
	}
	if _, err := m.Destroy(ctx, "bench", box.ID); err != nil {
		b.Fatal(err)
	}
	return d
}
