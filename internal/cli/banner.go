package cli

import (
	"encoding/json"
	"fmt"
	"io"
)

// tokenPlaceholder stands for the client's token in printed configurations:
// the banner never prints a token.
const tokenPlaceholder = "YOUR_TOKEN"

// printServing prints where an HTTP server listens and a client
// configuration to paste. With auth (--token-file) the configuration carries
// the Authorization header the server demands, with a placeholder to replace.
func printServing(w io.Writer, addr, engine, home string, auth bool) {
	url := "http://" + addr
	server := map[string]any{"type": "http", "url": url + "/mcp"}
	if auth {
		server["headers"] = map[string]string{"Authorization": "Bearer " + tokenPlaceholder}
	}
	cfg, _ := json.MarshalIndent(map[string]any{"mcpServers": map[string]any{"boxlite": server}}, "", "  ")
	fmt.Fprintf(w, "\nboxlite-mcp %s serving MCP\n  streamable HTTP: %s/mcp\n  SSE (legacy):    %s/sse\n  engine:          %s\n  home:            %s\n\n",
		Version, url, url, engine, home)
	fmt.Fprintf(w, "Client configuration (Claude Code .mcp.json, Cursor mcp.json):\n%s\n", cfg)
	if auth {
		fmt.Fprintf(w, "Replace %s with your token (the second field of your line in the --token-file).\n", tokenPlaceholder)
	}
	fmt.Fprintln(w)
}
