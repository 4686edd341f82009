package guestagent

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// info reports what the box looks like from inside.
func info() *wire.Info {
	in := &wire.Info{AgentVersion: Version, Protocol: wire.ProtocolVersion, Arch: runtime.GOARCH, PID: os.Getpid(), NumCPU: runtime.NumCPU()}
	in.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		in.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		in.UptimeMs = int64(si.Uptime) * 1000
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(fields[1], 10, 64)
			switch fields[0] {
			case "MemTotal:":
				in.MemTotalKiB = v
			case "MemAvailable:":
				in.MemAvailKiB = v
			}
		}
	}
	return in
}

func syncFS() { unix.Sync() }
