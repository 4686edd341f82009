package guestagent_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// Session calls across the wire protocol, on the host's node (the Python
// side is the same code; guestagent/session and sandbox/jail test it).

func jsSession(t *testing.T, c *client.Client, ctx context.Context, code string) (*wire.SessionResult, []wire.OutputHeader, string, error) {
	t.Helper()
	var outs []wire.OutputHeader
	var stdout bytes.Buffer
	res, err := c.RunSession(ctx, wire.SessionRequest{Name: "js", Language: wire.LangJavaScript, TimeoutMs: 60_000}, code,
		client.SessionIO{Stdout: &stdout, Output: func(h wire.OutputHeader, data []byte) {
			if int64(len(data)) != h.Size {
				t.Errorf("output %+v with %d bytes", h, len(data))
			}
			outs = append(outs, h)
		}})
	return res, outs, stdout.String(), err
}

func TestSessionOverTheWire(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
	c, _ := agent(t)
	ctx := context.Background()

	// 20 images: 16 come back, 4 are counted and dropped; an image over
	// the size limit is dropped too; the printed line arrives in order.
	code := `const png = Buffer.alloc(100); png.set([0x89, 0x50, 0x4e, 0x47], 0);
for (let i = 0; i < 20; i++) display(png);
const big = Buffer.alloc(5 << 20); big.set([0x89, 0x50, 0x4e, 0x47], 0); display(big);
console.log("done"); 6 * 7`
	res, outs, stdout, err := jsSession(t, c, ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	images := 0
	result := false
	for _, h := range outs {
		switch {
		case h.Mime == "image/png":
			images++
		case h.Kind == wire.OutputResult && h.Mime == "text/plain" && h.Size == 2:
			result = true
		}
	}
	if images != wire.MaxImages || res.ImagesDropped != 5 || !res.Truncated || stdout != "done\n" || !result {
		t.Fatalf("images %d, result %v, stdout %q, %+v", images, result, stdout, res)
	}

	// Cancelling interrupts the code; the session keeps its state.
	jsSession(t, c, ctx, "var kept = 1")
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(300*time.Millisecond, cancel)
	res, _, _, err = jsSession(t, c, cctx, "while (true) {}")
	if !errors.Is(err, context.Canceled) || res == nil || !res.Cancelled || res.Error == nil || res.Error.Name != "Interrupted" {
		t.Fatalf("cancel: %+v, %v", res, err)
	}
	res, outs, _, err = jsSession(t, c, ctx, "kept + 41")
	if err != nil || res.Restarted || len(outs) != 1 || outs[0].Size != 2 {
		t.Fatalf("after cancel: %+v %+v %v", res, outs, err)
	}
}
