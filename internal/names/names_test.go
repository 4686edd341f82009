package names

import (
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	for _, tt := range []struct {
		s         string
		name, env bool
	}{
		{"box1", true, true}, {"my.box-2_x", true, false}, {"_x", false, true}, {"-x", false, false},
		{"", false, false}, {"a b", false, false}, {"a\x00", false, false}, {"../x", false, false},
		{strings.Repeat("a", 63), true, true}, {strings.Repeat("a", 64), false, true}, {"9LIVES", true, false},
	} {
		if Valid(tt.s) != tt.name || ValidEnvKey(tt.s) != tt.env {
			t.Errorf("%q: Valid=%v ValidEnvKey=%v; want %v %v", tt.s, Valid(tt.s), ValidEnvKey(tt.s), tt.name, tt.env)
		}
	}
}
