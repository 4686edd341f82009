//go:build linux

package cli

// image pull, import, list, rm and prune, and the OCI image source of
// serve.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image/oci"
)

const imageUsage = `usage:
  boxlite-mcp image build [--name default] [--home DIR] [--agent PATH] [--mirror URL] [--force]
  boxlite-mcp image pull REF [--name NAME] [--home DIR] [--agent PATH]
  boxlite-mcp image import FILE|DIR --name NAME [--home DIR] [--agent PATH]
  boxlite-mcp image list [--home DIR]
  boxlite-mcp image rm NAME [--home DIR]
  boxlite-mcp image prune [--home DIR]`

// imageCmd runs `image SUBCOMMAND ...`.
func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{imageUsage}
	}
	switch args[0] {
	case "build":
		return imageBuild(ctx, args[1:], stdout, stderr)
	case "pull", "import", "list", "ls", "rm", "prune":
		return imageOCI(ctx, args[0], args[1:], stdout, stderr)
	}
	return usageError{fmt.Sprintf("unknown image command %q\n%s", args[0], imageUsage)}
}

func imageOCI(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image "+cmd, flag.ContinueOnError)
	home := fs.String("home", defaultHome(), "boxlite home directory")
	agent := fs.String("agent", "", "boxlite-guest binary to inject (default: next to this executable, else the default image's)")
	name := fs.String("name", "", "local image name")
	arg, err := parseWithArg(fs, args)
	if err != nil {
		return err
	}
	needArg := map[string]string{"pull": "REF", "import": "FILE|DIR", "rm": "NAME"}
	if want := needArg[cmd]; want != "" && arg == "" {
		return usageError{fmt.Sprintf("image %s: missing %s\n%s", cmd, want, imageUsage)}
	}
	if needArg[cmd] == "" && arg != "" {
		return usageError{fmt.Sprintf("image %s: unexpected argument %q", cmd, arg)}
	}
	if cmd == "import" && *name == "" {
		return usageError{"image import: --name is required"}
	}
	log, _ := newLogger(stderr, "warn")
	st, err := persist.Open(ctx, filepath.Join(*home, "boxlite.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := oci.New(oci.Config{Home: *home, Agent: agentPath(*home, *agent), AgentVersion: guestagent.Version,
		InUse: boxesUsing(st), Logger: log})
	if err != nil {
		return err
	}
	switch cmd {
	case "pull":
		p := newPullProgress(stdout)
		m, n, err := s.Pull(ctx, arg, oci.PullOptions{Name: *name, Progress: p.update})
		p.done()
		if err != nil {
			return publicError(err)
		}
		fmt.Fprintf(stdout, "image %q ready: %s (%s, %s)\n", n, m.Reference, m.Digest, m.Platform)
	case "import":
		p := newPullProgress(stdout)
		m, err := s.Import(ctx, arg, oci.PullOptions{Name: *name, Progress: p.update})
		p.done()
		if err != nil {
			return publicError(err)
		}
		fmt.Fprintf(stdout, "image %q imported from %s (%s)\n", *name, m.Reference, m.Platform)
	case "list", "ls":
		list, err := s.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tREFERENCE\tDIGEST\tSIZE\tCREATED\tBOXES")
		for _, in := range list {
			d := in.Digest
			if len(d) > 19 {
				d = d[:19]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d MiB\t%s\t%d\n", in.Name, in.Reference, orDash(d), in.Bytes>>20,
				in.Created.Local().Format("2006-01-02 15:04"), in.Boxes)
		}
		return tw.Flush()
	case "rm":
		if err := s.Remove(ctx, arg); err != nil {
			return publicError(err)
		}
		fmt.Fprintf(stdout, "image %q removed (its layers stay cached until `image prune`)\n", arg)
	case "prune":
		rep, err := s.Prune(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %d unreferenced layers (%d MiB) and %d leftovers of interrupted pulls\n", rep.Layers, rep.Bytes>>20, rep.Leftover)
	}
	return nil
}

// parseWithArg parses flags given before or after one positional argument.
func parseWithArg(fs *flag.FlagSet, args []string) (string, error) {
	fs.SetOutput(io.Discard)
	var arg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arg, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	rest := fs.Args()
	if arg == "" && len(rest) > 0 {
		arg, rest = rest[0], rest[1:]
		if err := fs.Parse(rest); err != nil {
			return "", usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		rest = fs.Args()
	}
	if len(rest) > 0 {
		return "", usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), rest[0])}
	}
	return arg, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// publicError keeps the public text of a classified error (the cause goes
// to the log at debug level only).
func publicError(err error) error {
	var se *sandbox.Error
	if errors.As(err, &se) {
		return errors.New(se.Msg)
	}
	return err
}

// agentPath is the guest agent pulled images get: --agent, else the one
// next to this executable, else the default image's.
func agentPath(home, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "boxlite-guest"); fileExists(p) {
			return p
		}
	}
	return filepath.Join(image.Dir(home, sandbox.DefaultImage), "rootfs", strings.TrimPrefix(image.AgentPath, "/"))
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// boxesUsing counts the boxes of every owner whose image is name.
func boxesUsing(st *persist.Store) func(context.Context, string) (int, error) {
	return func(ctx context.Context, name string) (int, error) {
		rows, err := st.List(ctx, persist.Filter{})
		if err != nil {
			return 0, err
		}
		n := 0
		for _, r := range rows {
			if r.Image == name {
				n++
			}
		}
		return n, nil
	}
}

// imageSource is serve's OCI image source.
// tenants says the server has tokens (tenants besides its operator).
func imageSource(home string, st *persist.Store, pull string, allow []string, tenants bool, log *slog.Logger) (sandbox.ImageSource, error) {
	switch oci.PullPolicy(pull) {
	case oci.PullMissing, oci.PullNever, oci.PullAlways:
	default:
		return nil, usageError{fmt.Sprintf("--pull %q: want missing, never or always", pull)}
	}
	for _, p := range allow {
		if err := oci.CheckPattern(p); err != nil {
			return nil, usageError{"--allow-image: " + err.Error()}
		}
	}
	return oci.New(oci.Config{Home: home, Agent: agentPath(home, ""), AgentVersion: guestagent.Version,
		Pull: oci.PullPolicy(pull), Allow: allow, InUse: boxesUsing(st), Tenants: tenants, Logger: log})
}

// pullProgress shows a pull: a progress bar per download on a terminal,
// plain lines otherwise.
type pullProgress struct {
	w       io.Writer
	tty     bool
	phase   string
	bar     *progressbar.ProgressBar
	lastPct int64
	start   time.Time
}

func newPullProgress(w io.Writer) *pullProgress {
	f, ok := w.(*os.File)
	return &pullProgress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), start: time.Now()}
}

func (p *pullProgress) update(u sandbox.ImageProgress) {
	phase := u.Message
	if i := strings.Index(phase, " "); u.Done > 0 && i > 0 {
		phase = phase[:i] // "downloading 1.0 MiB of 2.0 MiB" → "downloading"
	}
	if phase != p.phase {
		p.finishBar()
		p.phase, p.lastPct = phase, -1
		if u.Total > 0 && p.tty {
			p.bar = progressbar.NewOptions64(u.Total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(phase),
				progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionShowCount(), progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }))
		} else if u.Done == 0 {
			fmt.Fprintf(p.w, "%s ...\n", u.Message)
		}
	}
	if p.bar != nil {
		p.bar.Set64(max(u.Done, 0))
		return
	}
	if u.Total > 0 {
		if pct := u.Done * 100 / u.Total; pct/10 > p.lastPct/10 || (pct == 100 && p.lastPct != 100) {
			p.lastPct = pct
			fmt.Fprintf(p.w, "  %s (%d%%)\n", u.Message, pct)
		}
	}
}

func (p *pullProgress) finishBar() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}

func (p *pullProgress) done() { p.finishBar() }
