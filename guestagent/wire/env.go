package wire

// DefaultPath is the PATH of every process in a box unless its caller says otherwise.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BaseEnv is the environment every box's agent and runs start from, on
// every engine: the one definition (engines add BOXLITE_BOX_ID and the
// box's own variables; the agent adds its process environment on top).
func BaseEnv() []string {
	return []string{"PATH=" + DefaultPath, "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"}
}
