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

func TestDebootstrapErrorsAreClassified(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		log  string
		want error
	}{
		{"I: Retrieving InRelease\nE: Failed getting release file http://x/dists/bookworm/Release", ErrMirror},
		{"W: Couldn't download package libc6", ErrMirror},
		{"tar: ./usr/lib/x: Cannot write: No space left on device", ErrNoSpace},
		{"something else broke", nil},
	} {
		p := filepath.Join(dir, "log")
		os.WriteFile(p, []byte(tt.log), 0o644)
		err := debootstrapError(errors.New("exit 1"), p, "http://mirror")
		if tt.want == nil {
			if errors.Is(err, ErrMirror) || errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "something else broke") {
				t.Errorf("%q: %v", tt.log, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), strings.Split(tt.log, "\n")[0][:10]) {
			t.Errorf("%q: %v; want %v with the log tail", tt.log, err, tt.want)
		}
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

func TestMissingDeps(t *testing.T) {
	log := filepath.Join(t.TempDir(), "debootstrap.log")
	os.WriteFile(log, []byte("  Package libc6 is not installed.\nErrors were encountered while processing:\n libc6\ndpkg: dependency problems prevent configuration of python3-zmq:\n python3-zmq depends on python3-cffi-backend-api-max (>= 9729); however:\n  Package python3-cffi-backend-api-max is not installed.\n  Package python3-cffi-backend-api-max is not installed.\n  Package libboost-regex1.74.0-icu72 is not installed.\nErrors were encountered while processing:\n python3-zmq\n"), 0o644)
	if got := missingDeps(log); got != "python3-cffi-backend-api-max, libboost-regex1.74.0-icu72" {
		t.Fatalf("missingDeps = %q", got)
	}
}
