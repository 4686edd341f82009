package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ErrNoMirror means no Debian mirror was given and none could be taken from
// the host's apt configuration.
var ErrNoMirror = errors.New("no usable Debian mirror")

// aptSource is one source of the host's apt configuration: a one-line
// entry of sources.list or a deb822 stanza of a .sources file.
type aptSource struct {
	Types  []string // deb, deb-src
	URIs   []string
	Suites []string
	File   string // where it was read, for messages
}

// debianSuites are Debian's release codenames and aliases: a source with one
// of them serves a Debian archive that mmdebstrap can build any release from.
var debianSuites = map[string]bool{
	"stable": true, "testing": true, "unstable": true, "oldstable": true, "oldoldstable": true,
	"sid": true, "experimental": true, "buster": true, "bullseye": true, "bookworm": true,
	"trixie": true, "forky": true, "duke": true,
}

// mirrorSchemes are the URI schemes apt (in mmdebstrap) can download from.
var mirrorSchemes = map[string]bool{"http": true, "https": true, "ftp": true, "file": true}

// CheckMirror reports whether uri can be handed to mmdebstrap as a mirror.
func CheckMirror(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || !mirrorSchemes[u.Scheme] || (u.Scheme != "file" && u.Host == "") || (u.Scheme == "file" && u.Path == "") {
		return fmt.Errorf("mirror %q is not an http://, https://, ftp:// or file:/// URL of a Debian archive: %w", uri, ErrNoMirror)
	}
	return nil
}

// HostMirror returns the Debian archive the apt configuration under root
// ("/" on a real host) downloads suite from, and the file that says so. It
// reads sources.list and sources.list.d/*.list (one-line format, [options]
// allowed) and sources.list.d/*.sources (deb822), in apt's order, and
// resolves mirror+file:, mirror:// and mirror+http(s):// lists to their first
// entry. The first enabled deb source for suite wins, else the first for any
// Debian release; without one the error (ErrNoMirror) says to pass --mirror.
func HostMirror(ctx context.Context, root, suite string) (uri, file string, err error) {
	srcs, err := readAptSources(root)
	if err != nil {
		return "", "", err
	}
	var errs []error
	for _, pass := range []func(string) bool{
		func(s string) bool { return s == suite },
		func(s string) bool { return debianSuites[s] },
	} {
		for _, s := range srcs {
			if !hasAny(s.Types, "deb") || !hasMatch(s.Suites, pass) {
				continue
			}
			for _, u := range s.URIs {
				m, err := resolveMirror(ctx, root, u)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", s.File, err))
					continue
				}
				return m, s.File, nil
			}
		}
	}
	err = fmt.Errorf("the host's apt sources (%s) name no usable Debian archive for %q; pass --mirror URL (a Debian archive, such as http://MIRROR/debian): %w",
		filepath.Join(root, "etc/apt/sources.list{,.d/}"), suite, ErrNoMirror)
	if len(errs) > 0 {
		err = fmt.Errorf("%w\n%w", err, errors.Join(errs...))
	}
	return "", "", err
}

func hasAny(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

func hasMatch(list []string, ok func(string) bool) bool {
	for _, s := range list {
		if ok(s) {
			return true
		}
	}
	return false
}

// readAptSources reads every source apt would, in its order: sources.list,
// then sources.list.d/*.list and *.sources sorted by name (other names, such
// as *.disabled, are ignored as apt ignores them).
func readAptSources(root string) ([]aptSource, error) {
	dir := filepath.Join(root, "etc/apt")
	files := []string{filepath.Join(dir, "sources.list")}
	ents, err := os.ReadDir(filepath.Join(dir, "sources.list.d"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && (strings.HasSuffix(n, ".list") || strings.HasSuffix(n, ".sources")) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, filepath.Join(dir, "sources.list.d", n))
	}
	var out []aptSource
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var srcs []aptSource
		if strings.HasSuffix(f, ".sources") {
			srcs = parseDeb822(string(b))
		} else {
			srcs = parseOneLine(string(b))
		}
		for i := range srcs {
			srcs[i].File = f
		}
		out = append(out, srcs...)
	}
	return out, nil
}

// parseOneLine parses the one-line format: "deb [opt=v ...] URI SUITE
// [COMPONENT...]", '#' starting a comment.
func parseOneLine(text string) []aptSource {
	var out []aptSource
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], "[") {
			// Options, which may hold spaces: "[ arch=amd64 signed-by=K ]".
			end := 1
			for end < len(f) && !strings.Contains(f[end], "]") {
				end++
			}
			if end == len(f) {
				continue // unterminated options: apt refuses the line too
			}
			_, after, _ := strings.Cut(f[end], "]")
			f = append(append(f[:1:1], strings.Fields(after)...), f[end+1:]...)
		}
		if len(f) < 3 {
			continue
		}
		out = append(out, aptSource{Types: f[:1], URIs: f[1:2], Suites: f[2:3]})
	}
	return out
}

// parseDeb822 parses deb822 stanzas: "Field: value" lines (continued on
// indented lines), '#' lines ignored, stanzas separated by blank lines;
// field names are case-insensitive and "Enabled: no" drops a stanza.
func parseDeb822(text string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		if len(fields) > 0 && !strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no") {
			s := aptSource{Types: strings.Fields(fields["types"]), URIs: strings.Fields(fields["uris"]), Suites: strings.Fields(fields["suites"])}
			if len(s.Types) > 0 && len(s.URIs) > 0 && len(s.Suites) > 0 {
				out = append(out, s)
			}
		}
		fields, last = map[string]string{}, ""
	}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		switch {
		case strings.HasPrefix(line, "#"):
		case line == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// resolveMirror turns an apt URI into one mmdebstrap can use: plain URIs
// are checked, apt's mirror method lists (mirror+file:PATH, mirror://HOST/PATH
// and mirror+http(s)://HOST/PATH) give their first entry.
func resolveMirror(ctx context.Context, root, uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("URI %q: %w", uri, err)
	}
	var list io.ReadCloser
	switch u.Scheme {
	case "mirror+file":
		p := u.Opaque
		if p == "" {
			p = u.Path
		}
		if list, err = os.Open(filepath.Join(root, p)); err != nil {
			return "", fmt.Errorf("mirror list %s: %w", uri, err)
		}
	case "mirror", "mirror+http", "mirror+https":
		lu := *u
		lu.Scheme = strings.TrimPrefix(strings.TrimPrefix(u.Scheme, "mirror"), "+")
		if lu.Scheme == "" {
			lu.Scheme = "http"
		}
		if list, err = fetchList(ctx, lu.String()); err != nil {
			return "", fmt.Errorf("mirror list %s: %w", uri, err)
		}
	default:
		uri = strings.TrimSuffix(uri, "/")
		if err := CheckMirror(uri); err != nil {
			return "", err
		}
		return uri, nil
	}
	defer list.Close()
	sc := bufio.NewScanner(io.LimitReader(list, 1<<20))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		m := strings.TrimSuffix(f[0], "/")
		if err := CheckMirror(m); err != nil {
			return "", fmt.Errorf("mirror list %s: %w", uri, err)
		}
		return m, nil
	}
	return "", fmt.Errorf("mirror list %s is empty", uri)
}

// fetchList downloads a remote mirror list (bounded in time).
func fetchList(ctx context.Context, uri string) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	return cancelCloser{resp.Body, cancel}, nil
}

type cancelCloser struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelCloser) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
