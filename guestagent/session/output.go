package session

import (
	"sync"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// output passes one call's output to its Sink within the limits: stdout,
// stderr and text outputs share a byte budget (the rest is counted and
// dropped); images are kept up to wire.MaxImageBytes each and
// wire.MaxImages per call, other outputs up to wire.MaxOutputs. A failed
// Sink (the host went away) stops all sending; the code runs on.
type output struct {
	mu   sync.Mutex
	sink Sink
	left int64

	stdoutBytes, stderrBytes      int64
	truncated                     bool
	images, outputs               int
	imagesDropped, outputsDropped int
	failed                        bool
}

func newOutput(sink Sink, limit int64) *output { return &output{sink: sink, left: limit} }

// stream passes stream output (name "stdout" or "stderr").
func (o *output) stream(stderr bool, p []byte) {
	if len(p) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if stderr {
		o.stderrBytes += int64(len(p))
	} else {
		o.stdoutBytes += int64(len(p))
	}
	if int64(len(p)) > o.left {
		p = p[:max(o.left, 0)]
		o.truncated = true
	}
	o.left -= int64(len(p))
	if len(p) == 0 || o.failed {
		return
	}
	send := o.sink.Stdout
	if stderr {
		send = o.sink.Stderr
	}
	for len(p) > 0 {
		n := min(len(p), wire.ChunkSize)
		if send(p[:n]) != nil {
			o.failed = true
			return
		}
		p = p[n:]
	}
}

// rich passes one rich output.
func (o *output) rich(kind, mime string, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	drop := func() {
		o.outputsDropped++
		o.truncated = true
	}
	switch {
	case o.outputs >= wire.MaxOutputs || !wire.ValidMime(mime):
		drop() // a mime type the wire cannot carry would end the call
		return
	case wire.IsImage(mime):
		if o.images >= wire.MaxImages || len(data) > wire.MaxImageBytes {
			o.imagesDropped++
			drop()
			return
		}
		o.images++
	default:
		if int64(len(data)) > o.left || len(data) > wire.MaxOutputBytes {
			drop()
			return
		}
		o.left -= int64(len(data))
	}
	o.outputs++
	if o.failed {
		return
	}
	if o.sink.Output(wire.OutputHeader{Kind: kind, Mime: mime, Size: int64(len(data))}, data) != nil {
		o.failed = true
	}
}

// dropped counts an output the interpreter did not send, being over the
// size any output may have.
func (o *output) dropped(mime string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if wire.IsImage(mime) {
		o.imagesDropped++
	}
	o.outputsDropped++
	o.truncated = true
}

// counts copies what the call produced and dropped into res (under the
// lock: the driver's own streams may still be writing).
func (o *output) counts(res *wire.SessionResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	res.StdoutBytes, res.StderrBytes = o.stdoutBytes, o.stderrBytes
	res.Truncated = o.truncated
	res.OutputsDropped, res.ImagesDropped = o.outputsDropped, o.imagesDropped
}
