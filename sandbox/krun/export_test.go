package krun

import "github.com/boxlite-ai/boxlite-mcp/sandbox"

// VMMDir is the confined shim's writable directory for spec (tests).
func VMMDir(spec sandbox.Spec) string { return vmmDir(spec) }

// AgentSocket is where libkrun listens for the agent's connections (tests).
func AgentSocket(spec sandbox.Spec) string { return agentSocket(spec) }

func sandboxSpec(boxDir, socket string) sandbox.Spec {
	return sandbox.Spec{ID: "01abc", BoxDir: boxDir, Socket: socket}
}
