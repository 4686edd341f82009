// Command boxlite-mcp is the MCP server that gives AI agents disposable,
// isolated Linux boxes. See internal/cli for the commands.
package main

import (
	"os"

	"github.com/boxlite-ai/boxlite-mcp/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr)) }
