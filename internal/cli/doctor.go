package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// doctor prints what this host can do: every engine with whether it is
// usable and exactly why not, the images, and the home's health. It fails
// only when it could not inspect something.
func doctor(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	home := fs.String("home", defaultHome(), "boxlite home directory")
	kf := addK8sFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(out, "boxlite-mcp %s\n\n", Version)

	fmt.Fprintf(out, "home: %s\n", *home)
	var inspectErr error
	if st, err := os.Stat(*home); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(out, "  not created yet (serve creates it)")
	} else if err != nil {
		fmt.Fprintf(out, "  ERROR: %v\n", err)
		inspectErr = err
	} else if !st.IsDir() {
		fmt.Fprintln(out, "  ERROR: not a directory")
	} else {
		if unix.Access(*home, unix.W_OK) != nil {
			fmt.Fprintln(out, "  NOT WRITABLE by this user")
		}
		var sfs unix.Statfs_t
		if unix.Statfs(*home, &sfs) == nil {
			free := sfs.Bavail * uint64(sfs.Bsize)
			warn := ""
			if free < 2<<30 {
				warn = "  (LOW: images need about 1.5 GiB, boxes more)"
			}
			fmt.Fprintf(out, "  free space: %.1f GiB%s\n", float64(free)/(1<<30), warn)
		}
		db := filepath.Join(*home, "boxlite.db")
		if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(out, "  database: not created yet")
		} else {
			st, err := persist.Open(ctx, db)
			if err != nil {
				fmt.Fprintf(out, "  database: ERROR %v\n", err)
			} else {
				rows, _ := st.List(ctx, persist.Filter{})
				counts := map[string]int{}
				for _, r := range rows {
					counts[r.Status]++
				}
				fmt.Fprintf(out, "  database: ok (schema v%d, %d boxes%s)\n", persist.SchemaVersion(), len(rows), countSuffix(counts))
				fmt.Fprintln(out, "\npools:")
				printPools(ctx, out, st)
				st.Close()
			}
		}
	}

	fmt.Fprintln(out, "\nengines (auto picks the first usable one):")
	log := slog.New(slog.DiscardHandler)
	engs, _ := engines(*home, log, "auto")
	engs, kerr := withK8s(engs, kf, log, "auto")
	if kerr != nil {
		fmt.Fprintf(out, "  k8s   unusable: %v\n", kerr)
	}
	have := map[string]sandbox.Engine{}
	for _, e := range engs {
		have[e.Name()] = e
	}
	var pick string
	for _, name := range append(engineNames, "k8s") {
		e, ok := have[name]
		if !ok && name == "k8s" {
			if kerr == nil {
				fmt.Fprintln(out, "  k8s   not configured: pass --kubeconfig (and the other --k8s-* flags serve takes) to check a cluster")
			}
			continue
		}
		if !ok {
			fmt.Fprintf(out, "  %-5s unusable: not built into this binary\n", name)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		a := e.Available(cctx)
		cancel()
		state := "unusable"
		if a.Usable {
			state = "usable"
			if pick == "" {
				pick = name
			}
		}
		fmt.Fprintf(out, "  %-5s %s: %s\n", name, state, a.Reason)
		if a.Isolation != "" {
			fmt.Fprintf(out, "        isolation: %s\n", a.Isolation)
		}
		for _, d := range a.Details {
			fmt.Fprintf(out, "        - %s\n", d)
		}
	}
	if pick == "" {
		fmt.Fprintln(out, "  auto: NO engine is usable on this host")
	} else {
		fmt.Fprintf(out, "  auto: %s\n", pick)
		if pick == "jail" {
			fmt.Fprintln(out, "        WARNING: the jail is weaker isolation than a VM (boxes share the host kernel)")
		}
	}

	fmt.Fprintln(out, "\nimages:")
	ents, _ := os.ReadDir(filepath.Join(*home, "images"))
	var names []string
	for _, e := range ents {
		if e.IsDir() && e.Name()[0] != '.' {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		names = []string{"default"}
	}
	sort.Strings(names)
	for _, n := range names {
		img, err := image.Locate(*home, n)
		if err != nil {
			fmt.Fprintf(out, "  %s: %v\n", n, err)
			continue
		}
		m := img.Manifest
		vm := "no VM boot files (jail only)"
		if m.Kernel != nil {
			vm = "VM kernel " + m.Kernel.Package
		}
		fmt.Fprintf(out, "  %s: built %s, %s %s, %d packages, agent %s, rootfs %d MiB, %s\n", n,
			m.Created.Format(time.RFC3339), m.Suite, m.Variant, len(m.Packages), m.AgentVersion, m.RootfsBytes>>20, vm)
	}
	return inspectErr
}

func countSuffix(c map[string]int) string {
	if len(c) == 0 {
		return ""
	}
	var keys []string
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ":"
	for _, k := range keys {
		s += fmt.Sprintf(" %d %s", c[k], k)
	}
	return s
}
