package tools

import (
	"context"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Fixture content the MCP conformance suite expects.
const (
	fixturePNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
	fixtureWAV = "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA"
)

// AddConformanceFixtures registers the tools the official MCP conformance
// suite calls (test_simple_text and friends), so its tools-call scenarios
// exercise our transports end to end. Test use only: `serve
// --conformance-fixtures`; never on by default.
func AddConformanceFixtures(srv *server.MCPServer) {
	text := func(name, desc string, res func() *mcp.CallToolResult) {
		srv.AddTool(mcp.NewTool(name, mcp.WithDescription(desc)), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return res(), nil
		})
	}
	text("test_simple_text", "Returns a simple text response", func() *mcp.CallToolResult {
		return mcp.NewToolResultText("This is a simple text response for testing.")
	})
	text("test_image_content", "Returns image content", func() *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewImageContent(fixturePNG, "image/png")}}
	})
	text("test_audio_content", "Returns audio content", func() *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewAudioContent(fixtureWAV, "audio/wav")}}
	})
	text("test_embedded_resource", "Returns an embedded text resource", func() *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewEmbeddedResource(mcp.TextResourceContents{
			URI: "test://embedded-resource", MIMEType: "text/plain", Text: "This is an embedded resource content.",
		})}}
	})
	text("test_multiple_content_types", "Returns text, image and an embedded resource", func() *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{
			mcp.NewTextContent("Multiple content types test:"),
			mcp.NewImageContent(fixturePNG, "image/png"),
			mcp.NewEmbeddedResource(mcp.TextResourceContents{URI: "test://mixed-content-resource", MIMEType: "application/json", Text: `{"test":"data","value":123}`}),
		}}
	})
	text("test_error_handling", "Returns an intentional tool error", func() *mcp.CallToolResult {
		return mcp.NewToolResultError("This tool intentionally returns an error for testing")
	})
	notify := func(ctx context.Context, method string, params []map[string]any) error {
		for i, p := range params {
			if i > 0 {
				time.Sleep(50 * time.Millisecond)
			}
			if err := srv.SendNotificationToClient(ctx, method, p); err != nil {
				return err
			}
		}
		notificationsSettle()
		return nil
	}
	srv.AddTool(mcp.NewTool("test_tool_with_logging", mcp.WithDescription("Emits log messages")),
		func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var ps []map[string]any
			for _, m := range []string{"Tool execution started", "Tool processing data", "Tool execution completed"} {
				ps = append(ps, map[string]any{"level": "info", "logger": "conformance", "data": m})
			}
			if err := notify(ctx, string(mcp.MethodNotificationMessage), ps); err != nil {
				return nil, err
			}
			return mcp.NewToolResultText("Tool with logging executed successfully"), nil
		})
	srv.AddTool(mcp.NewTool("test_tool_with_progress", mcp.WithDescription("Reports progress")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
				var ps []map[string]any
				for _, p := range []int{0, 50, 100} {
					ps = append(ps, map[string]any{"progressToken": req.Params.Meta.ProgressToken, "progress": p, "total": 100})
				}
				if err := notify(ctx, string(mcp.MethodNotificationProgress), ps); err != nil {
					return nil, err
				}
			}
			return mcp.NewToolResultText("progress reported"), nil
		})
}
