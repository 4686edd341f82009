package tools

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Limits of the tool layer. They are part of the documented contract.
const (
	MaxCodeBytes       = 1 << 20 // run_code code and exec_command command
	MaxStdinBytes      = 1 << 20
	MaxWriteBytes      = 8 << 20 // write_file content, decoded
	DefaultReadBytes   = 1 << 20
	MaxReadBytes       = 2 << 20 // base64 of it fits the result budget (output.go)
	DefaultTimeoutSecs = 60
	MaxTimeoutSecs     = 3600
	MaxEnvVars         = sandbox.MaxEnvEntries
	MaxTTLSeconds      = 30 * 24 * 3600
)

// Languages run_code accepts.
var Languages = []string{"python", "javascript", "bash", "sh"}

// Engines create_box accepts.
var Engines = []string{"auto", "krun", "qemu", "jail", "k8s"}

// extra is what Go types cannot say about a field.
type extra struct {
	Default   any
	Enum      []any
	Min, Max  *float64
	MaxLength *int
	Pattern   string
}

func f(v float64) *float64 { return &v }
func n(v int) *int         { return &v }

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

var statuses = func() []any {
	var out []any
	for _, s := range sandbox.Statuses {
		out = append(out, string(s))
	}
	return out
}()

// boxRef is the schema extra of every "box" argument.
var boxRef = extra{MaxLength: n(128)}

// spec is one tool's definition: name, types and field extras.
type spec struct {
	name   string
	in     reflect.Type
	out    reflect.Type
	extras map[string]extra
}

var specs = []spec{
	{"create_box", reflect.TypeFor[CreateBoxIn](), reflect.TypeFor[BoxOut](), map[string]extra{
		"name":                 {MaxLength: n(63), Pattern: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`},
		"image":                {Default: sandbox.DefaultImage, MaxLength: n(512)},
		"engine":               {Default: "auto", Enum: strs(Engines)},
		"cpus":                 {Default: sandbox.DefaultCPUs, Min: f(1), Max: f(sandbox.MaxCPUs)},
		"memory_mib":           {Default: sandbox.DefaultMemory, Min: f(sandbox.MinMemoryMiB), Max: f(sandbox.MaxMemoryMiB)},
		"network":              {Default: false},
		"ttl_seconds":          {Min: f(0), Max: f(MaxTTLSeconds)},
		"idle_timeout_seconds": {Min: f(0), Max: f(MaxTTLSeconds)},
		"from_snapshot":        {MaxLength: n(128)},
	}},
	{"run_code", reflect.TypeFor[RunCodeIn](), reflect.TypeFor[RunCodeOut](), map[string]extra{
		"box":             boxRef,
		"session":         {Default: DefaultSession, Pattern: sessionPattern},
		"code":            {MaxLength: n(MaxCodeBytes)},
		"language":        {Default: "python", Enum: strs(Languages)},
		"timeout_seconds": {Default: DefaultTimeoutSecs, Min: f(1), Max: f(MaxTimeoutSecs)},
		"stdin":           {MaxLength: n(MaxStdinBytes)},
	}},
	{"exec_command", reflect.TypeFor[ExecCommandIn](), reflect.TypeFor[RunOut](), map[string]extra{
		"box":             boxRef,
		"command":         {MaxLength: n(MaxCodeBytes)},
		"timeout_seconds": {Default: DefaultTimeoutSecs, Min: f(1), Max: f(MaxTimeoutSecs)},
		"stdin":           {MaxLength: n(MaxStdinBytes)},
	}},
	{"write_file", reflect.TypeFor[WriteFileIn](), reflect.TypeFor[WriteFileOut](), map[string]extra{
		"box":      boxRef,
		"encoding": {Default: "text", Enum: []any{"text", "base64"}},
		"mode":     {Pattern: `^0?[0-7]{3,4}$`},
	}},
	{"read_file", reflect.TypeFor[ReadFileIn](), reflect.TypeFor[ReadFileOut](), map[string]extra{
		"box":       boxRef,
		"max_bytes": {Default: DefaultReadBytes, Min: f(1), Max: f(MaxReadBytes)},
	}},
	{"list_boxes", reflect.TypeFor[ListBoxesIn](), reflect.TypeFor[ListBoxesOut](), map[string]extra{
		"status": {Enum: statuses},
	}},
	{"destroy_box", reflect.TypeFor[DestroyBoxIn](), reflect.TypeFor[DestroyBoxOut](), map[string]extra{
		"box": boxRef,
	}},
	{"snapshot_box", reflect.TypeFor[SnapshotBoxIn](), reflect.TypeFor[SnapshotOut](), map[string]extra{
		"box":  boxRef,
		"name": {MaxLength: n(63), Pattern: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`},
	}},
	{"list_snapshots", reflect.TypeFor[ListSnapshotsIn](), reflect.TypeFor[ListSnapshotsOut](), nil},
	{"delete_snapshot", reflect.TypeFor[DeleteSnapshotIn](), reflect.TypeFor[DeleteSnapshotOut](), map[string]extra{
		"snapshot": {MaxLength: n(128)},
	}},
}

// Schema is a tool's input and output JSON Schemas.
type Schema struct {
	Input  json.RawMessage
	Output json.RawMessage
}

// Schemas returns every tool's schemas, generated from the Go types.
func Schemas() (map[string]Schema, error) {
	out := map[string]Schema{}
	for _, s := range specs {
		in, err := schemaOf(s.in, s.extras)
		if err != nil {
			return nil, fmt.Errorf("%s input: %w", s.name, err)
		}
		o, err := schemaOf(s.out, nil)
		if err != nil {
			return nil, fmt.Errorf("%s output: %w", s.name, err)
		}
		out[s.name] = Schema{Input: in, Output: o}
	}
	return out, nil
}

// ToolNames lists the tools in a stable order.
func ToolNames() []string {
	var names []string
	for _, s := range specs {
		names = append(names, s.name)
	}
	sort.Strings(names)
	return names
}

func schemaOf(t reflect.Type, extras map[string]extra) (json.RawMessage, error) {
	s, err := jsonschema.ForType(t, &jsonschema.ForOptions{})
	if err != nil {
		return nil, err
	}
	fixSlices(s)
	for name, x := range extras {
		p, ok := s.Properties[name]
		if !ok {
			return nil, fmt.Errorf("extra for unknown field %q", name)
		}
		if x.Default != nil {
			p.Default, _ = json.Marshal(x.Default)
		}
		p.Enum, p.Minimum, p.Maximum, p.MaxLength, p.Pattern = x.Enum, x.Min, x.Max, x.MaxLength, x.Pattern
	}
	s.Schema = "https://json-schema.org/draft/2020-12/schema"
	return json.MarshalIndent(s, "", "  ")
}

// fixSlices makes slice properties plain arrays: we never send null for them.
func fixSlices(s *jsonschema.Schema) {
	if s == nil {
		return
	}
	if len(s.Types) == 2 && s.Types[0] == "null" && s.Types[1] == "array" {
		s.Types, s.Type = nil, "array"
	}
	for _, p := range s.Properties {
		fixSlices(p)
	}
	fixSlices(s.Items)
}

// SchemaFiles returns the files of schemas/: <tool>.input.json and
// <tool>.output.json for every tool.
func SchemaFiles() (map[string][]byte, error) {
	s, err := Schemas()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for name, sc := range s {
		files[name+".input.json"] = append(append([]byte{}, sc.Input...), '\n')
		files[name+".output.json"] = append(append([]byte{}, sc.Output...), '\n')
	}
	return files, nil
}
