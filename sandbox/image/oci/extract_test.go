package oci

import (
	"archive/tar"
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/internal/testenv"
)

// unpackAll applies layers (tar streams) to a fresh root and returns it.
func unpackAll(t *testing.T, lim limits, layers ...[]byte) (string, *unpackStats, error) {
	t.Helper()
	testenv.RequireRoot(t)
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	tr, err := openTree(root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	if lim.bytes == 0 {
		lim = limits{bytes: 1 << 30, entries: 1 << 20}
	}
	st := &unpackStats{}
	u := &unpacker{t: tr, lim: lim, stats: st, log: slog.New(slog.NewTextHandler(tw{t}, nil))}
	for _, l := range layers {
		if err := u.layer(bytes.NewReader(l)); err != nil {
			return root, st, err
		}
	}
	u.finish()
	return root, st, nil
}

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func missing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (%v), want it gone", p, err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return string(b)
}

// TestUnpackLayers flattens two layers: whiteouts, an opaque directory,
// hard links, symlinks (kept as links, followed inside the root by a
// later layer), setuid bits and owners.
func TestUnpackLayers(t *testing.T) {
	suid := file("usr/bin/su", "su")
	suid.mode, suid.uid, suid.gid = 0o4755, 0, 0
	owned := file("home/u/f", "mine")
	owned.uid, owned.gid, owned.mode = 1000, 1001, 0o600
	sgidDir := dir("var/mail")
	sgidDir.mode, sgidDir.gid = 0o2775, 8
	big := file("home/u/big", "x")
	big.uid = 1_000_000_000 // a box range's host id must never own image files
	l1 := tarOf(t,
		dir("a"), file("a/keep", "keep"), file("a/gone", "gone"), dir("a/sub"), file("a/sub/x", "x"),
		dir("b"), file("b/old", "old"), dir("b/olddir"), file("b/olddir/deep", "d"),
		dir("usr"), dir("usr/bin"), suid, dir("usr/lib"), file("usr/lib/libc", "libc"),
		symlink("lib", "usr/lib"), symlink("abs", "/usr/lib"), hardlink("usr/bin/su-link", "usr/bin/su"),
		dir("home"), dir("home/u"), owned, big, dir("var"), sgidDir,
	)
	l2 := tarOf(t,
		file("a/.wh.gone", ""), file("b/.wh..wh..opq", ""), file("b/new", "new"),
		file("lib/libx", "via symlink of layer 1"), file("abs/liby", "via absolute symlink of layer 1"),
		file("a/.wh.sub", ""),
	)
	root, st, err := unpackAll(t, limits{}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "a/keep")); got != "keep" {
		t.Errorf("a/keep = %q", got)
	}
	missing(t, filepath.Join(root, "a/gone"))
	missing(t, filepath.Join(root, "a/sub"))
	missing(t, filepath.Join(root, "a/.wh.gone"))
	missing(t, filepath.Join(root, "b/old"))
	missing(t, filepath.Join(root, "b/olddir"))
	missing(t, filepath.Join(root, "b/.wh..wh..opq"))
	if got := read(t, filepath.Join(root, "b/new")); got != "new" {
		t.Errorf("b/new = %q", got)
	}
	if got := read(t, filepath.Join(root, "usr/lib/libx")); got != "via symlink of layer 1" {
		t.Errorf("usr/lib/libx = %q", got)
	}
	if got := read(t, filepath.Join(root, "usr/lib/liby")); got != "via absolute symlink of layer 1" {
		t.Errorf("usr/lib/liby = %q", got)
	}
	if l, _ := os.Readlink(filepath.Join(root, "abs")); l != "/usr/lib" {
		t.Errorf("abs -> %q", l)
	}
	s := lstat(t, filepath.Join(root, "usr/bin/su"))
	if s.Mode&0o7777 != 0o4755 || s.Uid != 0 {
		t.Errorf("su mode %o uid %d, want 4755 root", s.Mode&0o7777, s.Uid)
	}
	if l := lstat(t, filepath.Join(root, "usr/bin/su-link")); l.Ino != s.Ino {
		t.Errorf("hard link is another inode")
	}
	if o := lstat(t, filepath.Join(root, "home/u/f")); o.Uid != 1000 || o.Gid != 1001 || o.Mode&0o777 != 0o600 {
		t.Errorf("home/u/f %d:%d %o", o.Uid, o.Gid, o.Mode&0o777)
	}
	if d := lstat(t, filepath.Join(root, "var/mail")); d.Mode&0o7777 != 0o2775 || d.Gid != 8 {
		t.Errorf("var/mail %o gid %d", d.Mode&0o7777, d.Gid)
	}
	if b := lstat(t, filepath.Join(root, "home/u/big")); b.Uid != 65534 || st.Clamped != 1 {
		t.Errorf("owner beyond a box's ids: uid %d, clamped %d", b.Uid, st.Clamped)
	}
}

// TestUnpackWhiteoutSameLayer: a whiteout hides lower layers only, and an
// opaque directory keeps what its own layer put in it.
func TestUnpackWhiteoutSameLayer(t *testing.T) {
	l1 := tarOf(t, dir("d"), file("d/lower", "l"))
	l2 := tarOf(t, file("d/mine", "m"), file("d/.wh..wh..opq", ""), file("x", "x"), file(".wh.x", ""))
	root, _, err := unpackAll(t, limits{}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	missing(t, filepath.Join(root, "d/lower"))
	read(t, filepath.Join(root, "d/mine"))
	read(t, filepath.Join(root, "x"))
}

// TestUnpackHostile: each layer tries to reach the host; each is refused
// or its entry skipped, and nothing appears outside the root.
func TestUnpackHostile(t *testing.T) {
	dev := ent{name: "dev/sda", typ: tar.TypeChar, mode: 0o666}
	blk := ent{name: "dev/blk", typ: tar.TypeBlock, mode: 0o666}
	for _, tt := range []struct {
		name    string
		layers  func(host string) [][]byte
		refused bool
		inside  string // a file that must land inside the root instead (HOST: the host directory)
	}{
		{"dotdot", func(host string) [][]byte { return [][]byte{tarOf(t, file("../escape", "x"))} }, true, ""},
		{"dotdot deep", func(host string) [][]byte { return [][]byte{tarOf(t, dir("a"), file("a/../../escape", "x"))} }, true, ""},
		{"absolute name", func(host string) [][]byte { return [][]byte{tarOf(t, file(host+"/abs", "x"))} }, false, "HOST/abs"},
		{"own symlink parent", func(host string) [][]byte { return [][]byte{tarOf(t, symlink("evil", host), file("evil/pwned", "x"))} }, true, ""},
		{"own relative symlink parent", func(host string) [][]byte {
			return [][]byte{tarOf(t, symlink("evil", "../../../../../../.."+host), file("evil/pwned", "x"))}
		}, true, ""},
		{"own symlink chain", func(host string) [][]byte {
			return [][]byte{tarOf(t, dir("d"), symlink("d/l", "/"), symlink("m", "d/l"), file("m/pwned", "x"))}
		}, true, ""},
		{"lower symlink to host path", func(host string) [][]byte {
			return [][]byte{tarOf(t, symlink("evil", host)), tarOf(t, file("evil/pwned", "x"))}
		}, false, "HOST/pwned"},
		{"lower dotdot symlink", func(host string) [][]byte {
			return [][]byte{tarOf(t, symlink("up", "../../../../../../../../..")), tarOf(t, file("up/"+strings.TrimPrefix(host, "/")+"/pwned", "x"))}
		}, false, "HOST/pwned"},
		{"hard link out", func(host string) [][]byte { return [][]byte{tarOf(t, hardlink("pw", "../../../../etc/passwd"))} }, true, ""},
		{"hard link through own symlink", func(host string) [][]byte {
			return [][]byte{tarOf(t, symlink("l", "/etc"), hardlink("pw", "l/passwd"))}
		}, true, ""},
		{"hard link to a host file", func(host string) [][]byte { return [][]byte{tarOf(t, hardlink("pw", host+"/keep"))} }, true, ""},
		{"hard link to missing", func(host string) [][]byte { return [][]byte{tarOf(t, hardlink("pw", "etc/passwd"))} }, true, ""},
		{"devices skipped", func(host string) [][]byte { return [][]byte{tarOf(t, dir("dev"), dev, blk, file("dev/ok", "ok"))} }, false, "dev/ok"},
		{"whiteout through own symlink", func(host string) [][]byte { return [][]byte{tarOf(t, symlink("w", host), file("w/.wh.keep", ""))} }, true, ""},
		{"whiteout dotdot", func(host string) [][]byte { return [][]byte{tarOf(t, file("../.wh.x", ""))} }, true, ""},
		{"symlink loop", func(host string) [][]byte {
			return [][]byte{tarOf(t, symlink("a", "b"), symlink("b", "a")), tarOf(t, file("a/x", "x"))}
		}, true, ""},
		{"file as parent", func(host string) [][]byte { return [][]byte{tarOf(t, file("f", "x"), file("f/g", "y"))} }, true, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir() // stands for the host: nothing may appear here
			if err := os.WriteFile(filepath.Join(host, "keep"), []byte("host"), 0o644); err != nil {
				t.Fatal(err)
			}
			root, st, err := unpackAll(t, limits{}, tt.layers(host)...)
			if tt.refused && err == nil {
				t.Fatal("hostile layer accepted")
			}
			if !tt.refused && err != nil {
				t.Fatalf("refused: %v", err)
			}
			ents, _ := os.ReadDir(host)
			if len(ents) != 1 || read(t, filepath.Join(host, "keep")) != "host" {
				t.Fatalf("the host directory changed: %v", ents)
			}
			if n := lstat(t, filepath.Join(host, "keep")).Nlink; n != 1 {
				t.Fatalf("the host file got %d links", n)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
				t.Fatal("an entry escaped the root")
			}
			if tt.inside != "" {
				read(t, filepath.Join(root, strings.Replace(tt.inside, "HOST", strings.TrimPrefix(host, "/"), 1)))
			}
			if tt.name == "devices skipped" {
				missing(t, filepath.Join(root, "dev/sda"))
				missing(t, filepath.Join(root, "dev/blk"))
				if st.Devices != 2 {
					t.Errorf("devices skipped = %d", st.Devices)
				}
			}
		})
	}
}

// TestUnpackLimits: a layer over the size or entry cap is refused.
func TestUnpackLimits(t *testing.T) {
	big := tarOf(t, file("a", strings.Repeat("x", 4096)), file("b", strings.Repeat("y", 4096)))
	if _, _, err := unpackAll(t, limits{bytes: 6000, entries: 100}, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("size cap: %v", err)
	}
	// Content the unpacker skips counts too (the reader reads through it).
	skipped := tarOf(t, file(".wh.a", strings.Repeat("w", 4096)), file(".wh.b", strings.Repeat("w", 4096)))
	if _, _, err := unpackAll(t, limits{bytes: 6000, entries: 100}, skipped); !errors.Is(err, ErrTooLarge) {
		t.Errorf("skipped content: %v", err)
	}
	many := tarOf(t, file("a", ""), file("b", ""), file("c", ""))
	if _, _, err := unpackAll(t, limits{bytes: 1 << 20, entries: 2}, many); !errors.Is(err, ErrTooLarge) {
		t.Errorf("entry cap: %v", err)
	}
}

func TestCleanName(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		bad      bool
	}{
		{"a/b", "a/b", false},
		{"./a/./b/", "a/b", false},
		{"/etc/passwd", "etc/passwd", false},
		{"a/../b", "b", false},
		{"..", "", true},
		{"../x", "", true},
		{"a/../../x", "", true},
		{"./", ".", false},
		{"a\x00b", "", true},
	} {
		got, err := cleanName(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && got != tt.want) {
			t.Errorf("cleanName(%q) = %q, %v", tt.in, got, err)
		}
	}
}

// FuzzUnpackLayer: whatever a layer holds, nothing lands beside the root
// (the seeds are the hostile layers above, with relative escapes).
func FuzzUnpackLayer(f *testing.F) {
	testenv.RequireRoot(f)
	for _, l := range [][]byte{
		tarOf(f, file("../escape", "x")),
		tarOf(f, symlink("evil", ".."), file("evil/escape", "x")),
		tarOf(f, symlink("up", "../../.."), hardlink("h", "up/etc/passwd")),
		tarOf(f, dir("a"), symlink("a/b", "../.."), file("a/b/escape", "x"), file("a/.wh.b", "")),
		tarOf(f, ent{name: "dev/x", typ: tar.TypeChar}, file(".wh..wh..opq", ""), file("f", "y")),
	} {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		root := filepath.Join(parent, "rootfs")
		os.Mkdir(root, 0o755)
		tr, err := openTree(root)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.close()
		u := &unpacker{t: tr, lim: limits{bytes: 1 << 20, entries: 1000}, stats: &unpackStats{}, log: slog.New(slog.DiscardHandler)}
		u.layer(bytes.NewReader(data))
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("something landed beside the root: %v", ents)
		}
	})
}
