// Package tools is boxlite-mcp's MCP surface: the tool definitions, their
// input and output types (and the JSON Schemas generated from them), the
// handlers, and the one place where manager errors become tool results. It
// knows the box manager's API and nothing about engines or SQL.
package tools

//go:generate go run ../internal/cmd/genschemas -o ../schemas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// Version is the server version reported in the MCP handshake.
var Version = "0.1.0"

// Config configures the MCP server. Zero fields take defaults.
type Config struct {
	// Manager runs the boxes (required): a *sandbox.Manager.
	Manager Manager
	// OutputLimit caps stdout+stderr returned by one run (default 1 MiB).
	OutputLimit int64
	// ProgressEvery is the interval of progress notifications (default 1 s).
	ProgressEvery time.Duration
	// MaxCalls caps the tool calls in flight on the server (default
	// DefaultMaxCalls), OwnerMaxCalls those of one owner (default
	// DefaultOwnerMaxCalls). A call over a cap fails at once, saying so.
	MaxCalls, OwnerMaxCalls int
	Logger                  *slog.Logger
}

// Server holds the tool handlers.
type Server struct {
	cfg   Config
	m     Manager
	log   *slog.Logger
	admit *admission
}

// ownerKey carries the authenticated owner in a request context.
type ownerKey struct{}

// LocalOwner owns the boxes of stdio clients and unauthenticated loopback HTTP.
const LocalOwner = "local"

// WithOwner returns ctx carrying owner; transports call it after authentication.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

// Owner returns the owner in ctx, LocalOwner if none.
func Owner(ctx context.Context) string {
	if o, ok := ctx.Value(ownerKey{}).(string); ok && o != "" {
		return o
	}
	return LocalOwner
}

// NewMCPServer builds the MCP server with every tool registered.
func NewMCPServer(cfg Config) (*server.MCPServer, error) {
	if cfg.Manager == nil {
		return nil, errors.New("tools: Config.Manager is required")
	}
	if cfg.OutputLimit <= 0 {
		cfg.OutputLimit = 1 << 20
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultMaxCalls
	}
	if cfg.OwnerMaxCalls <= 0 {
		cfg.OwnerMaxCalls = DefaultOwnerMaxCalls
	}
	s := &Server{cfg: cfg, m: cfg.Manager, log: cfg.Logger.With("component", "tools"), admit: newAdmission(cfg.MaxCalls, cfg.OwnerMaxCalls)}
	schemas, err := Schemas()
	if err != nil {
		return nil, err
	}
	hooks := &server.Hooks{}
	hooks.AddAfterCallTool(func(ctx context.Context, id any, req *mcp.CallToolRequest, result any) {
		if r, ok := result.(*mcp.CallToolResult); ok && r.IsError {
			s.log.Info("tool call failed", "tool", req.Params.Name, "owner", Owner(ctx), "error", textOf(r))
		}
	})
	srv := server.NewMCPServer("boxlite-mcp", Version,
		server.WithToolCapabilities(false),
		server.WithLogging(),
		server.WithRecovery(),
		server.WithHooks(hooks),
		server.WithInstructions(instructions),
	)
	for _, d := range s.defs() {
		sc := schemas[d.name]
		tool := mcp.NewTool(d.name, append([]mcp.ToolOption{
			mcp.WithDescription(d.desc),
			mcp.WithToolTitle(d.title),
			rawSchemas(sc),
		}, d.ann.options()...)...)
		srv.AddTool(tool, s.wrap(d.name, sc.Input, d.handle))
	}
	return srv, nil
}

// rawSchemas sets a tool's generated schemas (and clears the default
// input schema NewTool fills in, which mcp-go refuses to send alongside).
func rawSchemas(sc Schema) mcp.ToolOption {
	return func(t *mcp.Tool) {
		t.InputSchema = mcp.ToolInputSchema{}
		t.OutputSchema = mcp.ToolOutputSchema{}
		t.RawInputSchema, t.RawOutputSchema = sc.Input, sc.Output
	}
}

const instructions = `boxlite-mcp gives you disposable, isolated Linux machines ("boxes").
create_box makes one (Debian with python3 and its data stack, node and bash); run_code and exec_command run code in it
(run_code keeps a Python or JavaScript session, like a notebook: state persists between calls, plots come back as images);
write_file and read_file move files; list_boxes shows your boxes; destroy_box removes one.
snapshot_box saves a box's state; create_box with from_snapshot branches new boxes from it (list_snapshots, delete_snapshot).
Boxes keep their files until destroyed, stop when idle, and restart transparently on the next call.`

// annotations are a tool's behaviour hints; every hint is always set.
type annotations struct{ readOnly, destructive, idempotent, openWorld bool }

func (a annotations) options() []mcp.ToolOption {
	return []mcp.ToolOption{
		mcp.WithReadOnlyHintAnnotation(a.readOnly),
		mcp.WithDestructiveHintAnnotation(a.destructive),
		mcp.WithIdempotentHintAnnotation(a.idempotent),
		mcp.WithOpenWorldHintAnnotation(a.openWorld),
	}
}

type toolDef struct {
	name, title, desc string
	ann               annotations
	handle            func(ctx context.Context, req mcp.CallToolRequest, raw json.RawMessage) (*mcp.CallToolResult, error)
}

func (s *Server) defs() []toolDef {
	return []toolDef{
		{"create_box", "Create a box", "Create a new isolated Linux box (a microVM where the host allows, else a namespace jail) and start it. Returns its id; pass the id (or the name you chose) to the other tools.",
			annotations{destructive: false, idempotent: false, openWorld: false}, typed(s.createBox)},
		{"run_code", "Run code in a box", "Run code in a box and return its output. language is python (default), javascript (node), bash or sh. Python and JavaScript run in a persistent interpreter session, like notebook cells: variables, imports and functions persist between calls (session names another interpreter, reset restarts it, fresh runs a new process instead). The result has the last expression's value (result), an exception (error), and rich outputs such as matplotlib plots (outputs, and images as image content). A non-zero exit or a timeout is a normal result (see exit_code and timed_out; a timeout interrupts a session's code and keeps its state). A stopped box is started first.",
			annotations{destructive: true, idempotent: false, openWorld: true}, typed(reportDenials(s, func(in RunCodeIn) string { return in.Box }, s.runCodeTool))},
		{"exec_command", "Run a shell command in a box", "Run a shell command (/bin/sh -c) in a box and return its output, with the same result as run_code.",
			annotations{destructive: true, idempotent: false, openWorld: true}, typed(reportDenials(s, func(in ExecCommandIn) string { return in.Box }, s.execCommand))},
		{"write_file", "Write a file in a box", "Write a file in a box (replacing it atomically; parent directories are created). content is text, or base64 with encoding=base64 for binary data.",
			annotations{destructive: true, idempotent: true, openWorld: false}, typed(s.writeFile)},
		{"read_file", "Read a file from a box", "Read a file from a box. Text comes back as text, other bytes as base64; PNG, JPEG and GIF files are also returned as images.",
			annotations{readOnly: true, idempotent: true, openWorld: false}, typed(s.readFile)},
		{"list_boxes", "List boxes", "List your boxes with their status.",
			annotations{readOnly: true, idempotent: true, openWorld: false}, typed(s.listBoxes)},
		{"destroy_box", "Destroy a box", "Destroy a box: stop everything running in it and delete its files. This cannot be undone.",
			annotations{destructive: true, idempotent: true, openWorld: false}, typed(s.destroyBox)},
		{"snapshot_box", "Snapshot a box", "Save a running box's state as a snapshot; the box keeps running. Every engine saves the files; VM engines (qemu) also save the memory, so running processes and interpreter sessions (Python variables) continue in boxes made from it. Pass the snapshot to create_box as from_snapshot to branch the box, as often as you like.",
			annotations{destructive: false, idempotent: false, openWorld: false}, typed(s.snapshotBox)},
		{"list_snapshots", "List snapshots", "List your snapshots.",
			annotations{readOnly: true, idempotent: true, openWorld: false}, typed(s.listSnapshots)},
		{"delete_snapshot", "Delete a snapshot", "Delete a snapshot and its files. Refused while boxes made from it still read its files (VM engines): destroy those boxes first. Boxes that hold copies (jail) do not prevent it.",
			annotations{destructive: true, idempotent: true, openWorld: false}, typed(s.deleteSnapshot)},
	}
}

// typed adapts a handler on a decoded input type.
func typed[T any](h func(context.Context, mcp.CallToolRequest, T) (*mcp.CallToolResult, error)) func(context.Context, mcp.CallToolRequest, json.RawMessage) (*mcp.CallToolResult, error) {
	return func(ctx context.Context, req mcp.CallToolRequest, raw json.RawMessage) (*mcp.CallToolResult, error) {
		var in T
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return errorResult(argError(req.Params.Name, err, in)), nil
		}
		return h(ctx, req, in)
	}
}

// wrap checks the arguments' shape (an object, required fields present)
// with clear messages before the typed handler decodes them, and bounds the
// encoded size of every result.
func (s *Server) wrap(name string, schema json.RawMessage, h func(context.Context, mcp.CallToolRequest, json.RawMessage) (*mcp.CallToolResult, error)) server.ToolHandlerFunc {
	var sch struct {
		Required   []string                   `json:"required"`
		Properties map[string]json.RawMessage `json:"properties"`
	}
	json.Unmarshal(schema, &sch)
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		raw := req.Params.RawArguments
		if len(raw) == 0 {
			b, _ := json.Marshal(req.Params.Arguments)
			raw = b
		}
		if string(raw) == "null" || len(raw) == 0 {
			raw = json.RawMessage("{}")
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return mcp.NewToolResultError(fmt.Sprintf("%s takes an object of arguments (%s)", name, argList(sch.Properties))), nil
		}
		var missing []string
		for _, r := range sch.Required {
			if v, ok := obj[r]; !ok || string(v) == "null" {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			return mcp.NewToolResultError(fmt.Sprintf("%s is missing required argument %s", name, quoteJoin(missing))), nil
		}
		leave, refused := s.admit.enter(Owner(ctx), name == "destroy_box")
		if refused != "" {
			return mcp.NewToolResultError(refused), nil
		}
		defer leave()
		res, err := h(ctx, req, raw)
		return s.bounded(name, res), err
	}
}

func argList(props map[string]json.RawMessage) string {
	var names []string
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	return "arguments: " + strings.Join(names, ", ")
}

func quoteJoin(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// argError explains a decoding failure in terms of the tool's arguments.
func argError(tool string, err error, in any) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s: argument %q must be %s, not a JSON %s", tool, te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		field := strings.TrimPrefix(msg, "json: unknown field ")
		return fmt.Sprintf("%s has no argument %s; it takes: %s", tool, field, fieldNames(in))
	}
	return fmt.Sprintf("%s: arguments are not valid JSON: %v", tool, err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "int32", "uint32":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "map":
		return "an object of strings"
	case "slice":
		return "an array"
	}
	return goKind
}

func fieldNames(in any) string {
	t := reflect.TypeOf(in)
	var names []string
	for i := 0; i < t.NumField(); i++ {
		names = append(names, strings.Split(t.Field(i).Tag.Get("json"), ",")[0])
	}
	return strings.Join(names, ", ")
}

func textOf(r *mcp.CallToolResult) string {
	for _, c := range r.Content {
		if t, ok := c.(mcp.TextContent); ok {
			return t.Text
		}
	}
	return ""
}

// toolError is the single mapping from manager errors to tool results:
// every failure of the sandboxed work is an isError result with a public
// message that says what to do next; internals go to the log only.
func (s *Server) toolError(ctx context.Context, tool string, err error) *mcp.CallToolResult {
	msg := sandbox.PublicMessage(err)
	switch sandbox.Class(err) {
	case sandbox.ErrNotFound, sandbox.ErrInvalidArgument, sandbox.ErrAlreadyExists, sandbox.ErrFailedPrecondition:
	case sandbox.ErrResourceExhausted:
		msg += " (the host or the box is out of a resource; free some or ask for less)"
	case sandbox.ErrUnavailable:
		msg += " (try again; if it persists, destroy the box and create a new one)"
	case sandbox.ErrDeadlineExceeded:
		if ctx.Err() != nil {
			msg = "the call was cancelled; the work in the box was stopped"
		}
	default:
		s.log.Error("internal error", "tool", tool, "err", err)
		msg = "internal error in boxlite-mcp (details in the server log): " + msg
	}
	if sandbox.Class(err) != sandbox.ErrInternal {
		s.log.Debug("tool error", "tool", tool, "err", err)
	}
	return errorResult(msg)
}
