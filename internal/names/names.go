// Package names holds the one definition of each naming rule that several
// layers check: box and image names, environment variable names. A leaf:
// the manager, the MCP tools and the image code all import it.
package names

import "regexp"

// MaxLen is the longest box or image name.
const MaxLen = 63

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Valid reports whether s is a valid box or image name: 1-63 letters,
// digits, '.', '_' or '-', starting with a letter or digit.
func Valid(s string) bool { return len(s) <= MaxLen && nameRE.MatchString(s) }

// ValidEnvKey reports whether k is a valid environment variable name.
func ValidEnvKey(k string) bool { return envKeyRE.MatchString(k) }
