package tools

// What a tool result may cost once sent. Everything a box produces (program
// output, file contents, error text) is hostile input: one byte of it costs
// from 1 to 6 bytes once JSON-encoded (a control byte becomes \u0000, '<'
// becomes \u003c, an invalid UTF-8 sequence becomes U+FFFD), and a result
// may carry it more than once (structuredContent, the text content, an
// image block). So every cap here counts ENCODED bytes and every copy
// (STYLE.md 4.8), and this file is the only place that decides how much of
// the box's bytes a result carries.
//
// The split between the two channels: MCP clients disagree on which one
// they read (Claude Code gives the model only structuredContent when it is
// present; LangChain-style clients and others only the text content), so
// both carry the output while it is small. Past textBudget the full
// (capped) output goes only into structuredContent, the typed result the
// output schema describes, and the text shows the start of it with a note
// saying where the rest is: the same large output is never sent twice.

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
)

const (
	// MaxResultBytes bounds the encoded JSON-RPC response of every tool
	// call, whatever the box printed: far below the 10 MiB frame limit of
	// the official TypeScript client's stdio transport. The budgets below
	// add up to less; wrap enforces it as the last line of defence.
	MaxResultBytes = 4 << 20
	// dataBudget caps the box data in one result, encoded: stdout and
	// stderr together, or a file's content (plus its image block).
	dataBudget = 3 << 20
	// textBudget caps the box data the text content repeats, encoded.
	textBudget = 64 << 10
	// errorBudget caps an error message, encoded.
	errorBudget = 8 << 10
	// lineBudget caps one line of box text in a progress message or a
	// status reason, encoded.
	lineBudget = 1 << 10
	// rpcSlack is left for the JSON-RPC envelope around a result (its id
	// is the client's choice).
	rpcSlack = 4 << 10
)

// runeCost is the size of r (size bytes of valid UTF-8) in a JSON string as
// encoding/json writes it, HTML escaping included (mcp-go uses json.Marshal
// on every transport).
func runeCost(r rune, size int) int {
	switch r {
	case '"', '\\', '\n', '\r', '\t', '\b', '\f':
		return 2
	case '<', '>', '&', '\u2028', '\u2029':
		return 6
	}
	if r < 0x20 {
		return 6
	}
	return size
}

// fit returns the longest prefix of s, in bytes, never splitting a UTF-8
// sequence, whose JSON encoding after sanitize costs at most budget bytes
// (quotes excluded), and that cost. It is the one measure every cap uses.
func fit(s string, budget int) (n, cost int) {
	invalid := false
	for n < len(s) {
		r, size := utf8.DecodeRuneInString(s[n:])
		c := 0
		if r == utf8.RuneError && size == 1 {
			if !invalid {
				c = 3 // sanitize writes one U+FFFD per run of invalid bytes
			}
			invalid = true
		} else {
			invalid = false
			c = runeCost(r, size)
		}
		if cost+c > budget {
			return n, cost
		}
		cost += c
		n += size
	}
	return n, cost
}

// encodedLen is the size of sanitize(s) in a JSON string, quotes excluded.
func encodedLen(s string) int {
	_, c := fit(s, int(^uint(0)>>1))
	return c
}

// sanitize makes s valid UTF-8 (each run of invalid bytes becomes U+FFFD),
// so no client meets a string it cannot decode.
func sanitize(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// trimPartial drops an incomplete UTF-8 sequence at the end of s, left
// where a limit counted in raw bytes cut a character in two.
func trimPartial(s string) string {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:]) {
				return s[:i]
			}
			break
		}
	}
	return s
}

// clip returns sanitize(s) cut to budget encoded bytes, and how many bytes
// of s were left out.
func clip(s string, budget int) (string, int) {
	n, _ := fit(s, budget)
	return sanitize(s[:n]), len(s) - n
}

// clipLine is clip for short box text shown inline (last output line,
// status reason).
func clipLine(s string) string {
	c, dropped := clip(s, lineBudget)
	if dropped > 0 {
		c += "…"
	}
	return c
}

// share splits budget between two strings, returning how many bytes of
// each fit: both whole when they fit together; else the smaller one keeps
// what it needs up to half, and the other takes the rest.
func share(a, b string, budget int) (na, nb int) {
	ca, cb := encodedLen(a), encodedLen(b)
	ba, bb := budget/2, budget-budget/2
	switch {
	case ca+cb <= budget:
		ba, bb = ca, cb
	case ca < ba:
		ba, bb = ca, budget-ca
	case cb < bb:
		ba, bb = budget-cb, cb
	}
	na, _ = fit(a, ba)
	nb, _ = fit(b, bb)
	return na, nb
}

// errorResult is an isError result whose message, which may quote the box
// or the caller, is capped.
func errorResult(msg string) *mcp.CallToolResult {
	m, dropped := clip(msg, errorBudget)
	if dropped > 0 {
		m += "… (message cut)"
	}
	return mcp.NewToolResultError(m)
}

// bounded is the last line of defence behind the budgets: a result whose
// encoding would be over MaxResultBytes (a bug) is replaced by an error, so
// no call can break the client's connection.
func (s *Server) bounded(tool string, r *mcp.CallToolResult) *mcp.CallToolResult {
	if r == nil {
		return r
	}
	b, err := json.Marshal(r)
	if err == nil && len(b) <= MaxResultBytes-rpcSlack {
		return r
	}
	s.log.Error("tool result over the size limit; replaced by an error", "tool", tool, "bytes", len(b), "err", err)
	return mcp.NewToolResultError("internal error in boxlite-mcp: the result was too large to send (details in the server log)")
}
