package image

import (
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// detachMounts lazily unmounts whatever is mounted under dir (deepest
// first): the /proc an interrupted build (mmdebstrap, or debootstrap of older versions) left
// mounted in its tree, which RemoveAll would otherwise walk into.
func detachMounts(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}

// syncFS flushes the file system holding dir.
func syncFS(dir string) {
	if f, err := os.Open(dir); err == nil {
		unix.Syncfs(int(f.Fd()))
		f.Close()
	}
}
