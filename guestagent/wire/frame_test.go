package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// vectors are raw encodings and what decoding them must give. They also seed the fuzzers.
var vectors = []struct {
	name string
	raw  []byte
	want Frame
	err  error
}{
	{"eof frame", []byte{0, 0, 0, 1, 9}, Frame{Type: FrameEOF, Payload: []byte{}}, nil},
	{"stdout", append([]byte{0, 0, 0, 4, 6}, "abc"...), Frame{Type: FrameStdout, Payload: []byte("abc")}, nil},
	{"request json", append([]byte{0, 0, 0, 16, 3}, `{"op":"ping"}  `...), Frame{Type: FrameRequest, Payload: []byte(`{"op":"ping"}  `)}, nil},
	{"output header", append([]byte{0, 0, 0, 3, 11}, `{}`...), Frame{Type: FrameOutput, Payload: []byte(`{}`)}, nil},
	{"control-size output", binary.BigEndian.AppendUint32(nil, MaxControl+2), Frame{}, ErrFrameTooLarge},
	{"zero length", []byte{0, 0, 0, 0, 6}, Frame{}, ErrBadFrame},
	{"type zero", []byte{0, 0, 0, 1, 0}, Frame{}, ErrBadFrame},
	{"unknown type", []byte{0, 0, 0, 1, 200}, Frame{}, ErrBadFrame},
	{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 6}, Frame{}, ErrFrameTooLarge},
	{"just over max", binary.BigEndian.AppendUint32(nil, MaxFrame+2), Frame{}, ErrFrameTooLarge},
	{"control over max", binary.BigEndian.AppendUint32(nil, MaxControl+2), Frame{}, ErrFrameTooLarge},
	{"truncated payload", []byte{0, 0, 0, 9, 6, 'a'}, Frame{}, io.ErrUnexpectedEOF},
	{"truncated header", []byte{0, 0}, Frame{}, io.ErrUnexpectedEOF},
	{"empty", nil, Frame{}, io.EOF},
}

func init() {
	// The two "over max" vectors need a type byte after the length.
	for i := range vectors {
		switch vectors[i].name {
		case "just over max":
			vectors[i].raw = append(vectors[i].raw, byte(FrameStdout))
		case "control over max":
			vectors[i].raw = append(vectors[i].raw, byte(FrameRequest))
		case "control-size output":
			vectors[i].raw = append(vectors[i].raw, byte(FrameOutput))
		}
	}
}

func TestReadFrameVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			f, err := NewReader(bytes.NewReader(v.raw)).ReadFrame()
			if v.err != nil {
				if !errors.Is(err, v.err) {
					t.Fatalf("err = %v; want %v", err, v.err)
				}
				return
			}
			if err != nil || f.Type != v.want.Type || !bytes.Equal(f.Payload, v.want.Payload) {
				t.Fatalf("got %v %q, %v; want %v %q", f.Type, f.Payload, err, v.want.Type, v.want.Payload)
			}
		})
	}
}

func TestRoundTripAndChunking(t *testing.T) {
	var buf bytes.Buffer
	big := bytes.Repeat([]byte{0xAB}, 3*ChunkSize+17)
	if err := WriteData(&buf, FrameData, big); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&buf, FrameResult, Result{Bytes: 7}); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	var got []byte
	frames := 0
	for {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == FrameResult {
			var res Result
			if err := DecodeJSON(f, FrameResult, &res); err != nil || res.Bytes != 7 {
				t.Fatalf("result %+v, %v", res, err)
			}
			break
		}
		frames++
		got = append(got, f.Payload...)
	}
	if frames != 4 || !bytes.Equal(got, big) {
		t.Fatalf("%d frames, %d bytes; want 4 frames, %d bytes", frames, len(got), len(big))
	}
	if err := WriteFrame(io.Discard, FrameData, make([]byte, MaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize write = %v", err)
	}
}

func TestRequestValidate(t *testing.T) {
	tests := []struct {
		req  Request
		code Code // "" for valid
	}{
		{Request{Op: OpPing}, ""},
		{Request{Op: "nope"}, CodeInvalid},
		{Request{Op: OpExec}, CodeInvalid},
		{Request{Op: OpExec, Exec: &ExecRequest{Argv: []string{""}}}, CodeInvalid},
		{Request{Op: OpExec, Exec: &ExecRequest{Argv: []string{"true"}, TimeoutMs: -1}}, CodeInvalid},
		{Request{Op: OpExec, Exec: &ExecRequest{Argv: []string{"cat"}, Stdin: []byte("x"), StdinStream: true}}, CodeInvalid},
		{Request{Op: OpExec, Exec: &ExecRequest{Argv: []string{"true"}}}, ""},
		{Request{Op: OpWriteFile, WriteFile: &WriteFileReq{}}, CodeInvalid},
		{Request{Op: OpReadFile, ReadFile: &ReadFileReq{Path: "/x", MaxBytes: -2}}, CodeInvalid},
		{Request{Op: OpStat}, CodeInvalid},
		{Request{Op: OpListDir, Path: "/"}, ""},
	}
	for _, tt := range tests {
		err := tt.req.Validate()
		if (tt.code == "" && err != nil) || (tt.code != "" && (err == nil || err.Code != tt.code)) {
			t.Errorf("Validate(%+v) = %v; want code %q", tt.req, err, tt.code)
		}
	}
}

// FuzzReadFrame: decoding arbitrary bytes never panics, never returns a frame
// over the limits, and a decoded frame re-encodes to the same bytes.
func FuzzReadFrame(f *testing.F) {
	for _, v := range vectors {
		f.Add(v.raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := NewReader(bytes.NewReader(raw))
		consumed := 0
		for {
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			if len(fr.Payload) > MaxFrame || (isControl(fr.Type) && len(fr.Payload) > MaxControl) {
				t.Fatalf("frame over limit: %d", len(fr.Payload))
			}
			var buf bytes.Buffer
			if err := WriteFrame(&buf, fr.Type, fr.Payload); err != nil {
				t.Fatal(err)
			}
			n := buf.Len()
			if !bytes.Equal(buf.Bytes(), raw[consumed:consumed+n]) {
				t.Fatal("re-encoding differs")
			}
			consumed += n
		}
	})
}

// FuzzDecodeRequest: any payload either fails to decode or validates without panicking.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{"op":"ping"}`, `{"op":"exec","exec":{"argv":["sh","-c","echo"],"timeout_ms":5}}`,
		`{"op":"write_file","write_file":{"path":"/x","size":-1}}`, `{"op":"read_file","read_file":{"path":"/x","max_bytes":1}}`,
		`{"op":"exec","exec":{"argv":[]}}`, `{"op":"exec","exec":null}`, `[]`, `null`, `{"op":7}`,
		`{"op":"session","session":{"name":"default","language":"python","code_bytes":4,"timeout_ms":3000,"reset":true}}`,
		`{"op":"session","session":{"name":"x","language":"javascript","code_bytes":-1,"env":["A=b"],"cwd":"/tmp"}}`,
		`{"op":"session","session":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var req Request
		if err := DecodeJSON(Frame{Type: FrameRequest, Payload: payload}, FrameRequest, &req); err != nil {
			return
		}
		_ = req.Validate()
	})
}
