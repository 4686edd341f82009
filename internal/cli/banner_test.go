package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestPrintServingConfig: the printed client configuration is valid JSON
// and, when the server demands a token, carries the Authorization header
// with a placeholder (the banner has no token to leak).
func TestPrintServingConfig(t *testing.T) {
	for _, tt := range []struct {
		name       string
		auth       bool
		wantHeader string // "" means no headers at all
	}{
		{"loopback without tokens", false, ""},
		{"with --token-file", true, "Bearer " + tokenPlaceholder},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printServing(&b, "127.0.0.1:7070", "jail", "/home", tt.auth)
			out := b.String()
			start, end := strings.Index(out, "{"), strings.LastIndex(out, "}")
			if start < 0 || end < start {
				t.Fatalf("no configuration in:\n%s", out)
			}
			var cfg struct {
				MCPServers map[string]struct {
					Type    string            `json:"type"`
					URL     string            `json:"url"`
					Headers map[string]string `json:"headers"`
				} `json:"mcpServers"`
			}
			if err := json.Unmarshal([]byte(out[start:end+1]), &cfg); err != nil {
				t.Fatalf("configuration is not JSON: %v\n%s", err, out)
			}
			s := cfg.MCPServers["boxlite"]
			if s.Type != "http" || s.URL != "http://127.0.0.1:7070/mcp" {
				t.Fatalf("server entry %+v", s)
			}
			if got := s.Headers["Authorization"]; got != tt.wantHeader || (tt.wantHeader == "" && s.Headers != nil) {
				t.Fatalf("headers %v, want Authorization %q", s.Headers, tt.wantHeader)
			}
			if tt.auth != strings.Contains(out, "Replace "+tokenPlaceholder) {
				t.Fatalf("placeholder explanation present=%v, want %v:\n%s", !tt.auth, tt.auth, out)
			}
		})
	}
}
