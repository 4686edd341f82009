package tools

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestSchemasUpToDate fails when schemas/ differs from the Go types: run
// `go generate ./tools` after changing a tool's types.
func TestSchemasUpToDate(t *testing.T) {
	files, err := SchemaFiles()
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := filepath.Glob("../schemas/*.json")
	if len(onDisk) != len(files) {
		t.Errorf("schemas/ has %d files, the tools define %d; run go generate ./tools", len(onDisk), len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("..", "schemas", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("schemas/%s is stale or missing; run go generate ./tools", name)
		}
	}
}

func TestSchemasDescribeEveryField(t *testing.T) {
	s, err := Schemas()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 10 {
		t.Fatalf("%d tools", len(s))
	}
	for name, sc := range s {
		for _, raw := range []json.RawMessage{sc.Input, sc.Output} {
			var obj struct {
				Type                 string                     `json:"type"`
				Properties           map[string]json.RawMessage `json:"properties"`
				AdditionalProperties json.RawMessage            `json:"additionalProperties"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Type != "object" {
				t.Fatalf("%s: %v %s", name, err, raw)
			}
			for field, p := range obj.Properties {
				var prop struct{ Description string }
				json.Unmarshal(p, &prop)
				if prop.Description == "" {
					t.Errorf("%s.%s has no description", name, field)
				}
			}
		}
	}
}
