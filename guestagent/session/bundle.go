package session

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// maxTraceback caps an error's traceback text.
const maxTraceback = 64 << 10

// bundle passes a mime bundle's representations to out: text/plain alone
// when it is the only one, else every other one (in mime order); a
// result's text/plain always goes (it is the call's result).
func bundle(out *output, kind string, data map[string]json.RawMessage) {
	mimes := make([]string, 0, len(data))
	for mime := range data {
		if mime != "text/plain" {
			mimes = append(mimes, mime)
		}
	}
	sort.Strings(mimes)
	if _, ok := data["text/plain"]; ok && (len(mimes) == 0 || kind == wire.OutputResult) {
		mimes = append([]string{"text/plain"}, mimes...)
	}
	for _, mime := range mimes {
		if b, ok := mimeData(mime, data[mime]); ok {
			out.rich(kind, mime, b)
		}
	}
}

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// stripANSI removes terminal colour codes.
func stripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }

// clipText cuts s to at most n bytes on a rune boundary, saying so.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "\n… (cut at " + fmt.Sprint(n) + " bytes)"
}

// mimeData decodes one representation of a mime bundle as Jupyter carries
// it: JSON strings for text types (joined when a list of lines), base64
// for binary ones, any other JSON value as its encoding (application/json).
func mimeData(mime string, raw json.RawMessage) ([]byte, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var lines []string
		if err := json.Unmarshal(raw, &lines); err == nil {
			s = strings.Join(lines, "")
		} else {
			return bytes.TrimSpace(raw), true // a JSON value (application/json, vnd.*+json)
		}
	}
	if isBinaryMime(mime) {
		b, err := decodeBase64(s)
		return b, err == nil
	}
	return []byte(s), true
}

// isBinaryMime says the Jupyter bundle carries mime as base64.
func isBinaryMime(mime string) bool {
	if mime == "image/svg+xml" {
		return false
	}
	return strings.HasPrefix(mime, "image/") || strings.HasPrefix(mime, "audio/") || strings.HasPrefix(mime, "video/") || mime == "application/pdf"
}

func decodeBase64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' {
			return -1
		}
		return r
	}, s))
}
