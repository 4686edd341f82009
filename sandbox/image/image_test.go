package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestLocateRejectsHalfBuiltImages(t *testing.T) {
	home := t.TempDir()
	dir := Dir(home, "x")
	if _, err := Locate(home, "x"); !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "image build --name x") {
		t.Fatalf("missing image: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755)
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{not json"), 0o644)
	if _, err := Locate(home, "x"); !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt manifest: %v", err)
	}
	m, _ := json.Marshal(Manifest{FormatVersion: FormatVersion, Name: "x"})
	os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644)
	if _, err := Locate(home, "x"); !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "rootfs.ext4 missing") {
		t.Fatalf("no ext4: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "rootfs.ext4"), nil, 0o644)
	if img, err := Locate(home, "x"); err != nil || img.Name != "x" {
		t.Fatalf("complete image: %v", err)
	}
	m, _ = json.Marshal(Manifest{FormatVersion: FormatVersion + 1})
	os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644)
	if _, err := Locate(home, "x"); !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "format") {
		t.Fatalf("future manifest: %v", err)
	}
}

func TestBootstrapErrorsAreClassified(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, log string
		want      error
		text      string // in the message
	}{
		{"mirror down", "E: Failed to fetch http://x/debian/dists/bookworm/InRelease  Could not connect to x:80", ErrMirror, "--mirror"},
		{"no DNS", "W: Failed to fetch http://x/dists/bookworm/InRelease  Temporary failure resolving 'x'", ErrMirror, "--mirror"},
		{"disk full", "dpkg: error processing archive x.deb (--unpack):\n cannot copy extracted data: No space left on device", ErrNoSpace, "disk filled up"},
		{"unknown package", "E: Unable to locate package nosuchpkg\nE: Unable to locate package other", nil, "no package nosuchpkg, other; check the names given with --packages"},
		{"no candidate", "E: Package 'python' has no installation candidate", nil, "no package python;"},
		{"other", "something else broke", nil, "something else broke"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "log")
			os.WriteFile(p, []byte(tt.log), 0o644)
			err := bootstrapError(errors.New("exit 1"), p, "http://mirror")
			if tt.want != nil && !errors.Is(err, tt.want) || tt.want == nil && (errors.Is(err, ErrMirror) || errors.Is(err, ErrNoSpace)) {
				t.Fatalf("%v; want class %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) || !strings.Contains(err.Error(), strings.Split(tt.log, "\n")[0]) {
				t.Fatalf("%v; want %q and the log tail", err, tt.text)
			}
		})
	}
}

// TestKeepDebs: the cache ends up with exactly the build's packages, moved
// out of the tree; the ones it lent the build stay in place.
func TestKeepDebs(t *testing.T) {
	archives, cache := t.TempDir(), t.TempDir()
	for name, dir := range map[string]string{"new_1.deb": archives, "lent_1.deb": archives, "old_1.deb": cache} {
		os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
	}
	os.Link(filepath.Join(archives, "lent_1.deb"), filepath.Join(cache, "lent_1.deb"))
	os.WriteFile(filepath.Join(archives, "lock"), nil, 0o644)
	if err := keepDebs(archives, cache); err != nil {
		t.Fatal(err)
	}
	got, _ := filepath.Glob(filepath.Join(cache, "*"))
	if len(got) != 2 || filepath.Base(got[0]) != "lent_1.deb" || filepath.Base(got[1]) != "new_1.deb" {
		t.Fatalf("cache: %v", got)
	}
	if _, err := os.Stat(filepath.Join(archives, "new_1.deb")); !os.IsNotExist(err) {
		t.Fatalf("new_1.deb still in the tree: %v", err)
	}
}

// TestMmdebstrapArgs: the mirror and packages given, the image's dpkg
// filters and the cache named by the environment, never by a shell word.
func TestMmdebstrapArgs(t *testing.T) {
	args := mmdebstrapArgs("bookworm", "http://m/debian", "/x/rootfs", []string{"a", "b"})
	joined := strings.Join(args, "\n")
	if n := len(args); args[n-3] != "bookworm" || args[n-2] != "/x/rootfs" || args[n-1] != "http://m/debian" {
		t.Fatalf("positional arguments: %q", args[n-3:])
	}
	for _, want := range []string{"--variant=minbase", "--include=a,b", "$" + excludesEnv, imageDpkgCfg, "$" + debCacheEnv} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %q in %q", want, args)
		}
	}
	if strings.Contains(joined, "--dpkgopt") {
		t.Error("--dpkgopt filters every essential package through mmtarfilter")
	}
	if strings.Contains(joined, "file-mirror-automount") {
		t.Error("an http mirror mounted")
	}
	if !strings.Contains(strings.Join(mmdebstrapArgs("bookworm", "file:///srv/debian", "/r", nil), " "), "file-mirror-automount") {
		t.Error("a file mirror is not mounted in the tree")
	}
}

func TestDpkgPackages(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	os.WriteFile(p, []byte("Package: b\nStatus: install ok installed\nVersion: 2\n\nPackage: a\nStatus: install ok installed\nVersion: 1.0\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 9\n"), 0o644)
	pk, err := dpkgPackages(p)
	if err != nil || len(pk) != 2 || pk[0] != (Package{"a", "1.0"}) || pk[1] != (Package{"b", "2"}) {
		t.Fatalf("%v %v", pk, err)
	}
}

// TestBuildLockSerialises: two builders of one image never run at once.
func TestBuildLockSerialises(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".x.lock")
	var mu sync.Mutex
	inside, maxInside := 0, 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := lockFile(context.Background(), path)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			maxInside = max(maxInside, inside)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxInside != 1 {
		t.Fatalf("%d builders held the lock at once", maxInside)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	unlock, _ := lockFile(context.Background(), path)
	defer unlock()
	if _, err := lockFile(ctx, path); err == nil {
		t.Fatal("a second lock while held")
	}
}

// TestBuildRestoresLegacyOwners: an image of an older version, whose rootfs/
// was owned by the shared jail id range, gets its real owners back (setuid
// bits kept) on the next build, so no box's range owns the lower layer.
func TestBuildRestoresLegacyOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	home := t.TempDir()
	dir := Dir(home, "legacy")
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "usr/bin"), 0o755)
	su := filepath.Join(rootfs, "usr/bin/su")
	os.WriteFile(su, []byte("x"), 0o755)
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("agent"), 0o755)
	sum, _ := fileSHA256(agent)
	const base = 1_000_000_000
	for _, p := range []string{rootfs, filepath.Join(rootfs, "usr"), filepath.Join(rootfs, "usr/bin"), su} {
		os.Lchown(p, base, base+42)
	}
	if err := syscall.Chmod(su, 0o4755); err != nil { // os.Chmod wants os.ModeSetuid, not 0o4000
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "rootfs.ext4"), nil, 0o644)
	m, _ := json.Marshal(Manifest{FormatVersion: FormatVersion, Name: "legacy", JailUIDBase: base, AgentSHA256: sum, Requested: normPackages(DefaultPackages)})
	os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644)

	img, err := Build(context.Background(), BuildConfig{Home: home, Name: "legacy", Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	if img.Manifest.JailUIDBase != 0 {
		t.Fatalf("manifest still says jail_uid_base %d", img.Manifest.JailUIDBase)
	}
	fi, _ := os.Stat(su)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSetuid == 0 || st.Uid != 0 || st.Gid != 42 {
		t.Fatalf("su: mode %v owner %d:%d; want setuid, 0:42", fi.Mode(), st.Uid, st.Gid)
	}
}

func TestPackagesChanged(t *testing.T) {
	defaults := normPackages(DefaultPackages)
	tests := []struct {
		name      string
		requested []string
		want      []string
		rebuild   bool
	}{
		{"same list", defaults, defaults, false},
		{"no recorded list (an older image)", nil, defaults, true},
		{"a package added", defaults, normPackages(append(append([]string{}, DefaultPackages...), "jq")), true},
		{"a package removed", defaults, normPackages([]string{"python3", "nodejs"}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := packagesChanged(Manifest{Requested: tt.requested}, tt.want)
			if (why != "") != tt.rebuild {
				t.Fatalf("packagesChanged = %q; want rebuild=%v", why, tt.rebuild)
			}
		})
	}
	if got := normPackages([]string{"b", "a", "b"}); strings.Join(got, ",") != "a,b" {
		t.Fatalf("normPackages = %v", got)
	}
	if CheckPackages([]string{"python3-numpy", "g++"}) != nil || CheckPackages([]string{"x;rm"}) == nil || CheckPackages([]string{"-o"}) == nil {
		t.Fatal("CheckPackages")
	}
}

// TestTrimDocs: documentation goes, copyright files and locale.alias stay;
// a symlinked doc directory is not followed.
func TestTrimDocs(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	for _, f := range []string{"usr/share/doc/a/copyright", "usr/share/doc/a/changelog.gz", "usr/share/man/man1/ls.1.gz",
		"usr/share/locale/locale.alias", "usr/share/locale/de/LC_MESSAGES/x.mo", "usr/share/info/x.info"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(root, f), nil, 0o644)
	}
	os.WriteFile(filepath.Join(outside, "keep"), nil, 0o644)
	os.Symlink(outside, filepath.Join(root, "usr/share/doc/b"))
	if err := trimDocs(root); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]bool{"usr/share/doc/a/copyright": true, "usr/share/doc/a/changelog.gz": false, "usr/share/man/man1": false,
		"usr/share/locale/locale.alias": true, "usr/share/locale/de": false, "usr/share/info/x.info": false} {
		if _, err := os.Stat(filepath.Join(root, f)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", f, err == nil, want)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("followed a symlink: %v", err)
	}
}
