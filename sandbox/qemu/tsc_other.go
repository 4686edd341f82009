//go:build !(linux && amd64)

package qemu

// measureTSCkHz cannot measure here: the TSC is x86's, and the engine runs
// x86 guests under TCG only on Linux.
func measureTSCkHz() (int, bool) { return 0, false }
