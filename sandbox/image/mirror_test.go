package image

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Hosts in these tests are fake (the .test TLD, TEST-NET addresses).

func TestParseOneLine(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		want       []aptSource
	}{
		{"plain", "deb http://mirror.test/debian bookworm main contrib\n",
			[]aptSource{{Types: []string{"deb"}, URIs: []string{"http://mirror.test/debian"}, Suites: []string{"bookworm"}}}},
		{"options", "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://192.0.2.7/debian bookworm main",
			[]aptSource{{Types: []string{"deb"}, URIs: []string{"http://192.0.2.7/debian"}, Suites: []string{"bookworm"}}}},
		{"spaced options", "deb [ arch=amd64 trusted=yes ] https://mirror.test/debian trixie main",
			[]aptSource{{Types: []string{"deb"}, URIs: []string{"https://mirror.test/debian"}, Suites: []string{"trixie"}}}},
		{"tabs and comment", "deb\thttp://mirror.test/debian\tbookworm main # the main archive\n",
			[]aptSource{{Types: []string{"deb"}, URIs: []string{"http://mirror.test/debian"}, Suites: []string{"bookworm"}}}},
		{"commented out", "# deb http://mirror.test/debian bookworm main\n#deb http://mirror.test/x bookworm main", nil},
		{"unterminated options", "deb [arch=amd64 http://mirror.test/debian bookworm main", nil},
		{"too short", "deb http://mirror.test/debian\n\n   \n", nil},
		{"deb-src kept as its type", "deb-src http://mirror.test/debian bookworm main",
			[]aptSource{{Types: []string{"deb-src"}, URIs: []string{"http://mirror.test/debian"}, Suites: []string{"bookworm"}}}},
		{"two lines", "deb http://198.51.100.1/debian-security bookworm-security main\ndeb http://198.51.100.1/debian bookworm main",
			[]aptSource{
				{Types: []string{"deb"}, URIs: []string{"http://198.51.100.1/debian-security"}, Suites: []string{"bookworm-security"}},
				{Types: []string{"deb"}, URIs: []string{"http://198.51.100.1/debian"}, Suites: []string{"bookworm"}},
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseOneLine(tt.text); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseDeb822(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		want       []aptSource
	}{
		{"two stanzas with comments", `Types: deb
# a comment inside the stanza
URIs: http://mirror.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.test/debian-security
Suites: bookworm-security
Components: main
`, []aptSource{
			{Types: []string{"deb"}, URIs: []string{"http://mirror.test/debian"}, Suites: []string{"bookworm", "bookworm-updates"}},
			{Types: []string{"deb"}, URIs: []string{"http://mirror.test/debian-security"}, Suites: []string{"bookworm-security"}},
		}},
		{"case, several values, continuation lines, inline key", "types: deb deb-src\nuris: http://a.mirror.test/debian\n  http://b.mirror.test/debian\nsuites: trixie\ncomponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n xsBN\n",
			[]aptSource{{Types: []string{"deb", "deb-src"}, URIs: []string{"http://a.mirror.test/debian", "http://b.mirror.test/debian"}, Suites: []string{"trixie"}}}},
		{"disabled", "Enabled: no\nTypes: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\n", nil},
		{"enabled yes", "Enabled: yes\nTypes: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\n",
			[]aptSource{{Types: []string{"deb"}, URIs: []string{"http://mirror.test/debian"}, Suites: []string{"bookworm"}}}},
		{"incomplete stanza", "Types: deb\nSuites: bookworm\n", nil},
		{"CRLF and extra blank lines", "\r\n\r\nTypes: deb\r\nURIs: http://mirror.test/debian\r\nSuites: sid\r\n\r\n\r\n",
			[]aptSource{{Types: []string{"deb"}, URIs: []string{"http://mirror.test/debian"}, Suites: []string{"sid"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseDeb822(tt.text); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// aptRoot writes files (relative to root) and returns root.
func aptRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestHostMirror(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mirrors.txt" {
			w.Write([]byte("# mirrors\nhttp://203.0.113.9/debian/\tpriority:1\nhttp://mirror.test/debian\n"))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	remote := strings.TrimPrefix(srv.URL, "http://")

	const security = "Types: deb\nURIs: http://sec.mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\n"
	for _, tt := range []struct {
		name     string
		files    map[string]string
		want     string // "" means ErrNoMirror
		wantFrom string
	}{
		{"no apt configuration", nil, "", ""},
		{"deb822, security stanza first", map[string]string{
			"etc/apt/sources.list.d/debian.sources": security + "\nTypes: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\n",
		}, "http://mirror.test/debian", "debian.sources"},
		{"one-line with options in sources.list", map[string]string{
			"etc/apt/sources.list": "deb [signed-by=/k.gpg] http://192.0.2.1/debian/ bookworm main\n",
		}, "http://192.0.2.1/debian", "sources.list"},
		{"only a .list file in sources.list.d", map[string]string{
			"etc/apt/sources.list.d/local.list": "deb http://mirror.test/debian bookworm main\n",
		}, "http://mirror.test/debian", "local.list"},
		{"apt's order: sources.list before sources.list.d, then by name", map[string]string{
			"etc/apt/sources.list":              "deb http://first.mirror.test/debian bookworm main\n",
			"etc/apt/sources.list.d/a.list":     "deb http://second.mirror.test/debian bookworm main\n",
			"etc/apt/sources.list.d/b.sources":  "Types: deb\nURIs: http://third.mirror.test/debian\nSuites: bookworm\n",
			"etc/apt/sources.list.d/0.disabled": "deb http://ignored.mirror.test/debian bookworm main\n",
		}, "http://first.mirror.test/debian", "sources.list"},
		{"files apt ignores are ignored", map[string]string{
			"etc/apt/sources.list.d/debian.sources.disabled": "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\n",
		}, "", ""},
		{"the build's suite wins over another release", map[string]string{
			"etc/apt/sources.list": "deb http://trixie.mirror.test/debian trixie main\ndeb http://bookworm.mirror.test/debian bookworm main\n",
		}, "http://bookworm.mirror.test/debian", "sources.list"},
		{"another Debian release serves too", map[string]string{
			"etc/apt/sources.list": "deb http://mirror.test/debian trixie main\n",
		}, "http://mirror.test/debian", "sources.list"},
		{"third-party and security archives only", map[string]string{
			"etc/apt/sources.list.d/vendor.sources": "Types: deb\nURIs: https://vendor.test/apt\nSuites: nodistro\nComponents: main\n",
			"etc/apt/sources.list.d/debian.sources": security,
		}, "", ""},
		{"not a Debian release (another distribution)", map[string]string{
			"etc/apt/sources.list": "deb http://mirror.test/other jammy main\n",
		}, "", ""},
		{"deb-src only and disabled stanzas", map[string]string{
			"etc/apt/sources.list":                  "deb-src http://mirror.test/debian bookworm main\n",
			"etc/apt/sources.list.d/debian.sources": "Types: deb\nEnabled: no\nURIs: http://mirror.test/debian\nSuites: bookworm\n",
		}, "", ""},
		{"unusable schemes are skipped", map[string]string{
			"etc/apt/sources.list": "deb cdrom:[Debian 12]/ bookworm main\ndeb tor+http://mirror.test/debian bookworm main\ndeb file:/srv/debian bookworm main\n",
		}, "file:/srv/debian", "sources.list"},
		{"mirror+file list", map[string]string{
			"etc/apt/sources.list.d/debian.sources": "Types: deb\nURIs: mirror+file:///etc/apt/mirrors/debian.list\nSuites: bookworm\n",
			"etc/apt/mirrors/debian.list":           "\n# comment\nhttps://mirror.test/debian/\tpriority:1\n",
		}, "https://mirror.test/debian", "debian.sources"},
		{"mirror+file list, single slash", map[string]string{
			"etc/apt/sources.list":        "deb mirror+file:/etc/apt/mirrors/debian.list bookworm main\n",
			"etc/apt/mirrors/debian.list": "http://192.0.2.3/debian\n",
		}, "http://192.0.2.3/debian", "sources.list"},
		{"missing mirror+file list falls through to the next source", map[string]string{
			"etc/apt/sources.list": "deb mirror+file:/etc/apt/mirrors/none.list bookworm main\ndeb http://mirror.test/debian bookworm main\n",
		}, "http://mirror.test/debian", "sources.list"},
		{"empty mirror+file list", map[string]string{
			"etc/apt/sources.list":        "deb mirror+file:/etc/apt/mirrors/debian.list bookworm main\n",
			"etc/apt/mirrors/debian.list": "# nothing\n",
		}, "", ""},
		{"mirror:// list over HTTP", map[string]string{
			"etc/apt/sources.list": "deb mirror://" + remote + "/mirrors.txt bookworm main\n",
		}, "http://203.0.113.9/debian", "sources.list"},
		{"mirror+http:// list over HTTP", map[string]string{
			"etc/apt/sources.list": "deb mirror+http://" + remote + "/mirrors.txt bookworm main\n",
		}, "http://203.0.113.9/debian", "sources.list"},
		{"mirror:// list not found", map[string]string{
			"etc/apt/sources.list": "deb mirror://" + remote + "/none.txt bookworm main\n",
		}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := aptRoot(t, tt.files)
			got, from, err := HostMirror(context.Background(), root, "bookworm")
			if tt.want == "" {
				if !errors.Is(err, ErrNoMirror) || !strings.Contains(err.Error(), "--mirror") {
					t.Fatalf("got %q, %v; want ErrNoMirror saying to pass --mirror", got, err)
				}
				return
			}
			if err != nil || got != tt.want || filepath.Base(from) != tt.wantFrom {
				t.Fatalf("got %q from %q, %v; want %q from %s", got, from, err, tt.want, tt.wantFrom)
			}
		})
	}
}

func TestCheckMirror(t *testing.T) {
	for _, tt := range []struct {
		uri string
		ok  bool
	}{
		{"http://mirror.test/debian", true},
		{"https://192.0.2.1:8443/debian", true},
		{"ftp://mirror.test/debian", true},
		{"file:///srv/debian", true},
		{"file:", false},
		{"mirror.test/debian", false},
		{"http:///debian", false},
		{"cdrom:[Debian]/", false},
		{"", false},
	} {
		if err := CheckMirror(tt.uri); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrNoMirror)) {
			t.Errorf("CheckMirror(%q) = %v, want ok=%v", tt.uri, err, tt.ok)
		}
	}
}
