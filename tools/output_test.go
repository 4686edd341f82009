package tools

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
)

// fitVectors seed the fit tests and FuzzFit: the costly characters and the
// edges between them.
var fitVectors = []string{
	"", "plain ascii", "\x00", "\x01\x1f\x7f", "\b\f\n\r\t\"\\", "<>&", "\u2028\u2029",
	"\xff", "\xff\xfe\xfd", "a\xffb\xffc", "\xe2\x82", "€\xe2\x82", "😀", "\xf0\x9f\x98", "\ufffd\xff",
	"\xed\xa0\x80", // a UTF-16 surrogate encoded as UTF-8: invalid in Go and JSON
}

// checkFit asserts fit's contract on s with budget: the prefix fits, its
// cost is exactly what encoding/json writes for it, and it is the longest.
func checkFit(t *testing.T, s string, budget int) {
	t.Helper()
	n, cost := fit(s, budget)
	enc, err := json.Marshal(sanitize(s[:n]))
	if err != nil {
		t.Fatal(err)
	}
	if cost > budget || len(enc)-2 != cost {
		t.Fatalf("fit(%q, %d) = %d, cost %d; encoding is %d bytes", s, budget, n, cost, len(enc)-2)
	}
	if !utf8.ValidString(sanitize(s[:n])) || !strings.HasPrefix(sanitize(s), strings.TrimSuffix(sanitize(s[:n]), "\uFFFD")) {
		t.Fatalf("fit(%q, %d) = %d: not a prefix", s, budget, n)
	}
	if n < len(s) {
		_, size := utf8.DecodeRuneInString(s[n:])
		if m, _ := fit(s[:n+size], budget); m > n {
			t.Fatalf("fit(%q, %d) = %d, but %d bytes fit", s, budget, n, m)
		}
	}
}

func TestFitCostsWhatJSONWrites(t *testing.T) {
	for _, s := range fitVectors {
		long := strings.Repeat(s, 50)
		for _, budget := range []int{0, 1, 2, 3, 5, 6, 7, 100, 1 << 20} {
			checkFit(t, s, budget)
			checkFit(t, long, budget)
		}
	}
}

// FuzzFit: on any bytes and budget, fit's cost is the encoded size.
func FuzzFit(f *testing.F) {
	for i, s := range fitVectors {
		f.Add(s, uint16(i*3))
	}
	f.Fuzz(func(t *testing.T, s string, budget uint16) {
		checkFit(t, s, int(budget))
	})
}

func TestShare(t *testing.T) {
	tests := []struct {
		a, b   string
		budget int
		na, nb int
	}{
		{"aaaa", "bb", 10, 4, 2},       // both fit
		{"aaaa", "bbbbbbbb", 8, 4, 4},  // even split
		{"a", "bbbbbbbbbb", 8, 1, 7},   // the small one keeps its share, the other takes the rest
		{"aaaaaaaaaa", "b", 8, 7, 1},   // and the other way round
		{"\x00\x00\x00", "", 12, 2, 0}, // 6 bytes per NUL
		{"", "", 0, 0, 0},              // nothing
		{"😀😀", "😀😀", 8, 4, 4},          // never split a character
		{"😀😀", "😀😀", 7, 0, 4},          // even when that leaves a share unused
	}
	for _, tt := range tests {
		if na, nb := share(tt.a, tt.b, tt.budget); na != tt.na || nb != tt.nb {
			t.Errorf("share(%q, %q, %d) = %d, %d; want %d, %d", tt.a, tt.b, tt.budget, na, nb, tt.na, tt.nb)
		}
	}
}

func TestTrimPartial(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""}, {"abc", "abc"}, {"a€", "a€"}, {"a\xe2\x82", "a"}, {"a\xe2", "a"},
		{"😀\xf0\x9f\x98", "😀"}, {"a\xff", "a\xff"}, // a stray byte is not a cut character
	}
	for _, tt := range tests {
		if got := trimPartial(tt.in); got != tt.want {
			t.Errorf("trimPartial(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestOutBuffer(t *testing.T) {
	o := outBuffer{limit: 10}
	for _, p := range []string{"first line\nsec", "ond\n", "\x00\xff partial"} {
		o.Write([]byte(p))
	}
	kept, total := o.raw()
	if kept != "first line" || total != int64(len("first line\nsecond\n\x00\xff partial")) {
		t.Fatalf("raw = %q, %d", kept, total)
	}
	if got := o.lastLine(); got != "\x00\uFFFD partial" {
		t.Fatalf("lastLine = %q", got)
	}
	o.Write([]byte("\n\n"))
	if got := o.lastLine(); got != "\x00\uFFFD partial" {
		t.Fatalf("lastLine after blank lines = %q", got)
	}
}

// TestErrorTextIsCapped: an error message carrying box text (an agent's
// error, a name the caller sent) is capped like output.
func TestErrorTextIsCapped(t *testing.T) {
	r := invalid("bad: %s", strings.Repeat("\x00", 1<<20))
	b, _ := json.Marshal(r)
	if len(b) > errorBudget+1024 || !r.IsError || !strings.HasSuffix(textOf(r), "(message cut)") {
		t.Fatalf("error result is %d bytes encoded: %.80q", len(b), textOf(r))
	}
}

// TestBoundedReplacesOversizeResults: the last line of defence replaces a
// result over MaxResultBytes, whatever built it.
func TestBoundedReplacesOversizeResults(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	big := mcp.NewToolResultText(strings.Repeat("<", MaxResultBytes/6+1))
	r := s.bounded("t", big)
	if !r.IsError || !strings.Contains(textOf(r), "too large") {
		t.Fatalf("oversize result passed: %.80q", textOf(r))
	}
	small := mcp.NewToolResultText("ok")
	if s.bounded("t", small) != small {
		t.Fatal("a small result was replaced")
	}
}

// TestReadResultBudget: file contents of every kind fit the data budget,
// in one copy, and images are attached only when a second copy fits.
func TestReadResultBudget(t *testing.T) {
	png := "\x89PNG\r\n\x1a\n"
	tests := []struct {
		name     string
		data     string
		encoding string
		images   int
	}{
		{"text", "hello\n", "text", 0},
		{"NUL is binary", "a\x00b", "base64", 0},
		{"invalid UTF-8", "\xff\xfe", "base64", 0},
		{"max of controls", strings.Repeat("\x01", MaxReadBytes), "text", 0},
		{"max of NULs", strings.Repeat("\x00", MaxReadBytes), "base64", 0},
		{"small image", png + strings.Repeat("\x00", 1000), "base64", 1},
		{"large image", png + strings.Repeat("\x00", MaxReadBytes-len(png)), "base64", 0},
	}
	for _, tt := range tests {
		r := readResult("/f", []byte(tt.data), false)
		out := r.StructuredContent.(ReadFileOut)
		b, _ := json.Marshal(r)
		images := 0
		for _, c := range r.Content {
			if _, ok := c.(mcp.ImageContent); ok {
				images++
			}
		}
		if out.Encoding != tt.encoding || images != tt.images || len(b) > dataBudget+textBudget+rpcSlack {
			t.Errorf("%s: encoding %s, %d images, %d bytes encoded", tt.name, out.Encoding, images, len(b))
		}
		if out.Truncated != (out.Size < int64(len(tt.data))) {
			t.Errorf("%s: truncated=%v with %d of %d bytes", tt.name, out.Truncated, out.Size, len(tt.data))
		}
	}
}
