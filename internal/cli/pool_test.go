package cli

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

func TestParsePools(t *testing.T) {
	have := []string{"qemu", "jail"}
	tests := []struct {
		flags []string
		want  map[string]int
		err   string
	}{
		{nil, map[string]int{}, ""},
		{[]string{"jail=4", "qemu=2"}, map[string]int{"jail": 4, "qemu": 2}, ""},
		{[]string{"jail=4", "jail=1"}, map[string]int{"jail": 1}, ""}, // the last one wins
		{[]string{"jail=0"}, map[string]int{"jail": 0}, ""},
		{[]string{"jail"}, nil, "want ENGINE=N"},
		{[]string{"jail=-1"}, nil, "want ENGINE=N"},
		{[]string{"jail=65"}, nil, "from 0 to 64"},
		{[]string{"jail=x"}, nil, "want ENGINE=N"},
		{[]string{"krun=1"}, nil, "runs no krun engine (it has qemu, jail)"},
	}
	for _, tt := range tests {
		got, err := parsePools(tt.flags, have)
		if tt.err != "" {
			var u usageError
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.As(err, &u) {
				t.Errorf("parsePools(%q) = %v, %v; want a usage error with %q", tt.flags, got, err, tt.err)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tt.want) {
			t.Errorf("parsePools(%q) = %v, %v; want %v", tt.flags, got, err, tt.want)
		}
	}
}

func TestPrintPools(t *testing.T) {
	ctx := context.Background()
	st, err := persist.Open(ctx, filepath.Join(t.TempDir(), "boxlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out bytes.Buffer
	printPools(ctx, &out, st)
	if !strings.Contains(out.String(), "none (serve --pool") {
		t.Fatalf("no pools: %q", out.String())
	}
	for _, status := range []string{"pooled", "pooled", "creating", "destroying"} {
		if err := st.Insert(ctx, &persist.Box{Owner: persist.PoolOwner, Engine: "jail", Image: "default", Status: status}); err != nil {
			t.Fatal(err)
		}
	}
	st.SetPoolTarget(ctx, "jail", 3)
	st.SetPoolError(ctx, "jail", "the box needs 512 MiB of memory")
	out.Reset()
	printPools(ctx, &out, st)
	for _, want := range []string{"jail  2 ready of 3, 1 filling, being removed: 1 destroying; last refill error (", "): the box needs 512 MiB of memory"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor's pools: %q; want %q in it", out.String(), want)
		}
	}
}
