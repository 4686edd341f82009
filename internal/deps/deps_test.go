// Package deps holds the test that enforces the import direction drawn in
// docs/ARCHITECTURE.md: cmd → tools → sandbox → {persist, guestagent/wire,
// guestagent/client}; tools reach the guest only through sandbox's own
// types; persist and guestagent/wire import nothing of ours;
// the guest agent imports no host package; engines never touch SQL.
package deps

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/boxlite-ai/boxlite-mcp/"

type pkg struct {
	ImportPath string
	Imports    []string
}

// rules: a package (prefix match on the path below the module) may not
// import any of the listed prefixes.
var rules = []struct {
	pkg    string
	forbid []string
	why    string
}{
	{"persist", []string{""}, "persist is the bottom layer: it imports nothing of ours"},
	{"guestagent/wire", []string{""}, "the wire protocol imports nothing of ours"},
	{"guestagent", []string{"sandbox", "tools", "persist", "internal/cli", "cmd/"}, "the guest agent runs in the box: no host packages"},
	{"cmd/boxlite-guest", []string{"sandbox", "tools", "persist", "internal/cli"}, "the guest binary links no host packages"},
	{"sandbox/jail", []string{"persist", "tools"}, "engines never touch SQL nor the MCP layer"},
	{"sandbox/qemu", []string{"persist", "tools"}, "engines never touch SQL nor the MCP layer"},
	{"sandbox/krun", []string{"persist", "tools"}, "engines never touch SQL nor the MCP layer"},
	{"sandbox/image", []string{"persist", "tools"}, "images know nothing of boxes' records or MCP"},
	{"sandbox", []string{"tools", "internal/cli"}, "the manager knows nothing of MCP or the CLI"},
	{"tools", []string{"persist", "internal/cli", "sandbox/jail", "sandbox/qemu", "sandbox/krun"}, "tools talk to the manager only, never to SQL or an engine"},
	{"tools", []string{"guestagent"}, "the guest protocol is not the manager's API: tools use sandbox's own request and result types"},
	{"internal/inroot", []string{""}, "a leaf used by both sides"},
	{"internal/idshift", []string{""}, "a leaf"},
	{"guestagent/jailspec", []string{""}, "the jail contract is a leaf both sides import"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n := 0
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		n++
		rel := strings.TrimPrefix(p.ImportPath, mod)
		for _, r := range rules {
			if rel != r.pkg && !strings.HasPrefix(rel, r.pkg+"/") {
				continue
			}
			if r.pkg == "guestagent" && (strings.HasPrefix(rel, "guestagent/client")) {
				continue // the host side of the agent protocol lives beside it
			}
			for _, imp := range p.Imports {
				if !strings.HasPrefix(imp, mod) {
					continue
				}
				irel := strings.TrimPrefix(imp, mod)
				for _, f := range r.forbid {
					// "" forbids everything of ours outside the package's own tree.
					if f == "" && !strings.HasPrefix(irel, r.pkg) || f != "" && strings.HasPrefix(irel, f) {
						t.Errorf("%s imports %s: %s", rel, irel, r.why)
					}
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("go list found only %d packages", n)
	}
}
