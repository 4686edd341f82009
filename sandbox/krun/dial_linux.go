package krun

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// dialSocket connects to the unix socket at path, which lies in a
// directory the box's uid controls: the name is opened without following
// it (O_PATH|O_NOFOLLOW), the inode must be a socket owned by uid, and the
// connection goes to that inode (/proc/self/fd/N), never to whatever the
// name points at by the time of a connect.
func dialSocket(ctx context.Context, path string, uid uint32) (net.Conn, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("agent socket: not a socket (mode %#o)", st.Mode)
	}
	if st.Uid != uid {
		return nil, fmt.Errorf("agent socket: owned by uid %d, not the box's %d", st.Uid, uid)
	}
	return (&net.Dialer{}).DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
}
