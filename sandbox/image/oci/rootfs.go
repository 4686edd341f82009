package oci

// After the layers: what boxlite adds to every OCI root file system (the
// mount points the engines expect, the guest agent) and what it reads from
// it (the image user's ids and home).

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/internal/inroot"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
)

// errImageLayout means the image's tree cannot take boxlite's additions.
var errImageLayout = errors.New("unsupported image layout")

// baseDirs are created when an image lacks them (a mount point or a file
// the engines write must have a directory to go in).
var baseDirs = []struct {
	name string
	mode uint32
}{{"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"tmp", 0o1777}, {"etc", 0o755}, {"root", 0o700}, {"run", 0o755}}

// addBaseDirs creates the missing base directories; whatever the image has
// at those names stays as it is.
func addBaseDirs(t *tree) error {
	for _, d := range baseDirs {
		err := unix.Mkdirat(t.rootFD, d.name, 0o700)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "mkdir", Path: "/" + d.name, Err: err}
		}
		fd, err := inroot.Open(t.rootFD, d.name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = unix.Fchmod(fd, d.mode) // mkdirat applies the umask
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// injectAgent installs the guest agent at image.AgentPath (root, 0755)
// and returns its sha256. The directories on the way must be real: the
// engines open that path on the host, so a symlink there is refused.
func injectAgent(t *tree, agent string) (string, error) {
	dir := strings.TrimPrefix(path.Dir(image.AgentPath), "/")
	sofar := ""
	for _, c := range strings.Split(dir, "/") {
		sofar = path.Join(sofar, c)
		st, err := t.stat(sofar)
		if errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return "", err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return "", fmt.Errorf("%w: /%s is not a directory (boxlite-mcp installs its agent at %s)", errImageLayout, sofar, image.AgentPath)
		}
	}
	dirfd, err := t.openDir(dir)
	if err != nil {
		return "", err
	}
	defer unix.Close(dirfd)
	name := path.Base(image.AgentPath)
	if err := t.removeAt(dirfd, name, path.Join(dir, name)); err != nil {
		return "", err
	}
	return writeAgent(dirfd, name, agent)
}

// writeAgent writes agent as name in dirfd through a temporary name and a
// rename, owned by root, mode 0755.
func writeAgent(dirfd int, name, agent string) (string, error) {
	in, err := os.Open(agent)
	if err != nil {
		return "", fmt.Errorf("guest agent: %w", err)
	}
	defer in.Close()
	tmp := "." + name + ".new"
	unix.Unlinkat(dirfd, tmp, 0)
	fd, err := unix.Openat(dirfd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o700)
	if err != nil {
		return "", &os.PathError{Op: "create", Path: image.AgentPath, Err: err}
	}
	out := os.NewFile(uintptr(fd), tmp)
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = ownMode(fd, 0, 0, 0o755)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dirfd, tmp, dirfd, name)
	}
	if err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// user is the image's User resolved against its /etc/passwd and /etc/group.
type user struct {
	uid, gid uint32
	home     string
}

// lookupUser resolves the config's User: "", "name", "uid", with
// ":group" or ":gid" optionally. A name the image does not define is an
// error (every run would fail); ids must fit a box's 65536.
func lookupUser(t *tree, spec string) (user, error) {
	u := user{home: "/root"}
	if spec == "" {
		return u, nil
	}
	who, group, hasGroup := strings.Cut(spec, ":")
	passwd := readEtc(t, "passwd")
	found := false
	if id, err := strconv.ParseUint(who, 10, 32); err == nil {
		u.uid, u.home = uint32(id), "/"
		for _, f := range passwd {
			if len(f) >= 6 && f[2] == who {
				u.gid, u.home, found = atoi(f[3]), f[5], true
				break
			}
		}
	} else {
		for _, f := range passwd {
			if len(f) >= 6 && f[0] == who {
				u.uid, u.gid, u.home, found = atoi(f[2]), atoi(f[3]), f[5], true
				break
			}
		}
		if !found {
			return u, fmt.Errorf("%w: the image's user %q is not in its /etc/passwd", errImageLayout, who)
		}
	}
	if hasGroup {
		if id, err := strconv.ParseUint(group, 10, 32); err == nil {
			u.gid = uint32(id)
		} else {
			ok := false
			for _, f := range readEtc(t, "group") {
				if len(f) >= 3 && f[0] == group {
					u.gid, ok = atoi(f[2]), true
					break
				}
			}
			if !ok {
				return u, fmt.Errorf("%w: the image's group %q is not in its /etc/group", errImageLayout, group)
			}
		}
	}
	if u.uid >= 65536 || u.gid >= 65536 {
		return u, fmt.Errorf("%w: the image's user %q has ids above 65535, which a box cannot map", errImageLayout, spec)
	}
	if !path.IsAbs(u.home) {
		u.home = "/"
	}
	return u, nil
}

func atoi(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

// readEtc reads /etc/<name> of the image (through its symlinks, inside
// the root) as colon-separated fields; a missing file reads as empty.
func readEtc(t *tree, name string) [][]string {
	etc, err := t.resolve("etc")
	if err != nil {
		return nil
	}
	fd, err := inroot.Open(t.rootFD, path.Join(etc, name), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// workDir makes the image's WorkingDir exist (Docker creates it at run
// time) and returns the default directory of runs: WorkingDir, else the
// user's home when it exists, else / (or /root for root).
func workDir(t *tree, wd string, u user) (string, error) {
	if wd != "" {
		wd = path.Clean("/" + wd)
		rel := strings.TrimPrefix(wd, "/")
		if rel != "" {
			cdir, err := t.resolve(rel)
			if err != nil {
				return "", fmt.Errorf("working directory %s: %w", wd, err)
			}
			fd, err := t.openDir(cdir)
			if err != nil {
				return "", fmt.Errorf("%w: working directory %s: %v", errImageLayout, wd, err)
			}
			unix.Close(fd)
		}
		return wd, nil
	}
	if cdir, err := t.resolve(strings.TrimPrefix(path.Clean(u.home), "/")); err == nil {
		if st, err := t.stat(cdir); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return u.home, nil
		}
	}
	return "/", nil
}
