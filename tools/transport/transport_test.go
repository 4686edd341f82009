package transport

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLineLimiter(t *testing.T) {
	long := strings.Repeat("x", 100)
	in := "short\n" + long + "\n" + "after\n" + strings.Repeat("y", 30) + "\n"
	l := &lineLimiter{r: bufio.NewReaderSize(strings.NewReader(in), 16), max: 40}
	out, err := io.ReadAll(l)
	if err != nil {
		t.Fatal(err)
	}
	// The oversize line is cut short and ends in a NUL (never valid JSON):
	// the server answers it with a parse error and reads on.
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 4 || lines[0] != "short" || !strings.HasSuffix(lines[1], "\x00") || len(lines[1]) > 41 ||
		lines[2] != "after" || lines[3] != strings.Repeat("y", 30) {
		t.Fatalf("got %q", lines)
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "t")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	toks, err := LoadTokens(write("# c\nalice aaaaaaaaaaaaaaaa\n\nbob bbbbbbbbbbbbbbbb\n"))
	if err != nil || toks["aaaaaaaaaaaaaaaa"] != "alice" || toks["bbbbbbbbbbbbbbbb"] != "bob" {
		t.Fatalf("%v %v", toks, err)
	}
	for _, bad := range []string{"alice short\n", "alice\n", "a tttttttttttttttt\nb tttttttttttttttt\n", "# nothing\n"} {
		if _, err := LoadTokens(write(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestOriginAndLoopback(t *testing.T) {
	a := &auth{origins: map[string]bool{"https://app.example": true}}
	for o, want := range map[string]bool{
		"http://localhost:3000": true, "http://127.0.0.1": true, "http://[::1]:8080": true,
		"https://app.example": true, "https://app.example/": true, "https://evil.example": false,
		"null": false, "http://localhost.evil.example": false,
	} {
		if got := a.originAllowed(o); got != want {
			t.Errorf("originAllowed(%q) = %v", o, got)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:7070": true, "localhost:1": true, "[::1]:7": true, "0.0.0.0:7070": false, ":7070": false, "10.0.0.1:1": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) != %v", addr, want)
		}
	}
}
