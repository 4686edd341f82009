// Command genschemas writes the JSON Schema of every tool's input and output
// into a directory (schemas/ via `go generate ./tools`).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/boxlite-ai/boxlite-mcp/tools"
)

func main() {
	out := flag.String("o", "schemas", "output directory")
	flag.Parse()
	files, err := tools.SchemaFiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(*out, name), data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
