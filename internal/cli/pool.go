package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// maxPool bounds one engine's warm pool (each pooled box holds its memory).
const maxPool = 64

// parsePools reads serve's --pool ENGINE=N flags against the engines this
// server runs; a later flag for an engine replaces an earlier one.
func parsePools(flags []string, have []string) (map[string]int, error) {
	pools := map[string]int{}
	for _, f := range flags {
		engine, num, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 0 || n > maxPool {
			return nil, usageError{fmt.Sprintf("--pool %q: want ENGINE=N with N from 0 to %d, e.g. --pool jail=4", f, maxPool)}
		}
		found := false
		for _, h := range have {
			found = found || h == engine
		}
		if !found {
			return nil, usageError{fmt.Sprintf("--pool %q: this server runs no %s engine (it has %s)", f, engine, strings.Join(have, ", "))}
		}
		pools[engine] = n
	}
	return pools, nil
}

// printPools writes doctor's pools section: each engine's fill, target and
// last refill error, as the home records them.
func printPools(ctx context.Context, out io.Writer, st *persist.Store) {
	ps, err := st.Pools(ctx)
	if err != nil {
		fmt.Fprintf(out, "  ERROR: %v\n", err)
		return
	}
	if len(ps) == 0 {
		fmt.Fprintln(out, "  none (serve --pool ENGINE=N keeps N booted boxes ready)")
		return
	}
	for _, p := range ps {
		fmt.Fprintf(out, "  %-5s %d ready of %d, %d filling", p.Engine, p.Boxes["pooled"], p.Target, p.Boxes["creating"])
		if rest := without(p.Boxes, "pooled", "creating"); len(rest) > 0 {
			fmt.Fprintf(out, ", being removed%s", countSuffix(rest))
		}
		if p.LastError == "" {
			fmt.Fprintln(out, "; last refill error: none")
		} else {
			fmt.Fprintf(out, "; last refill error (%s): %s\n", p.LastErrorAt.UTC().Format(time.RFC3339), p.LastError)
		}
	}
}

func without(m map[string]int, keys ...string) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}
