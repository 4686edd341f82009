package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestSessionRequestValidate(t *testing.T) {
	ok := func(r SessionRequest) *SessionRequest { return &r }
	tests := []struct {
		name string
		req  *SessionRequest
		bad  bool
	}{
		{"minimal", ok(SessionRequest{Name: "default", Language: LangPython}), false},
		{"javascript", ok(SessionRequest{Name: "a_b-9", Language: LangJavaScript, CodeBytes: 10, TimeoutMs: 5}), false},
		{"missing", nil, true},
		{"empty name", ok(SessionRequest{Language: LangPython}), true},
		{"upper case", ok(SessionRequest{Name: "Default", Language: LangPython}), true},
		{"slash", ok(SessionRequest{Name: "../x", Language: LangPython}), true},
		{"33 chars", ok(SessionRequest{Name: strings.Repeat("a", 33), Language: LangPython}), true},
		{"bash", ok(SessionRequest{Name: "x", Language: "bash"}), true},
		{"negative code", ok(SessionRequest{Name: "x", Language: LangPython, CodeBytes: -1}), true},
		{"huge code", ok(SessionRequest{Name: "x", Language: LangPython, CodeBytes: MaxSessionCode + 1}), true},
		{"negative timeout", ok(SessionRequest{Name: "x", Language: LangPython, TimeoutMs: -1}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&Request{Op: OpSession, Session: tt.req}).Validate()
			if (err != nil) != tt.bad {
				t.Fatalf("Validate = %v; want bad=%v", err, tt.bad)
			}
		})
	}
}

func TestOutputHeaderValidate(t *testing.T) {
	tests := []struct {
		h    OutputHeader
		want error
	}{
		{OutputHeader{Kind: OutputDisplay, Mime: "image/png", Size: MaxImageBytes}, nil},
		{OutputHeader{Kind: OutputResult, Mime: "text/plain", Size: 0}, nil},
		{OutputHeader{Kind: OutputDisplay, Mime: "image/png", Size: MaxImageBytes + 1}, ErrFrameTooLarge},
		{OutputHeader{Kind: OutputDisplay, Mime: "text/html", Size: MaxOutputBytes + 1}, ErrFrameTooLarge},
		{OutputHeader{Kind: OutputDisplay, Mime: "text/html", Size: -1}, ErrFrameTooLarge},
		{OutputHeader{Kind: "other", Mime: "text/html"}, ErrBadFrame},
		{OutputHeader{Kind: OutputDisplay}, ErrBadFrame},
	}
	for _, tt := range tests {
		err := tt.h.Validate()
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("Validate(%+v) = %v; want %v", tt.h, err, tt.want)
		}
	}
}

// FuzzDecodeOutput: any output header payload decodes and validates
// without panicking, and a valid one is within the limits.
func FuzzDecodeOutput(f *testing.F) {
	for _, s := range []string{`{"kind":"display","mime":"image/png","size":5}`, `{"kind":"result","mime":"text/plain","size":0}`,
		`{"kind":"display","mime":"image/png","size":99999999999}`, `{"kind":"x"}`, `[]`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var h OutputHeader
		if err := DecodeJSON(Frame{Type: FrameOutput, Payload: payload}, FrameOutput, &h); err != nil {
			return
		}
		if h.Validate() == nil && (h.Size < 0 || h.Size > MaxOutputBytes) {
			t.Fatalf("valid header over the limits: %+v", h)
		}
	})
}
