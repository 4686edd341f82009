package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// TestNetworkArgs: a box with network gets a virtio-net NIC on a stream
// netdev to its network helper's link socket, and never QEMU's own user
// network (whose 10.0.2.2 reached the host's loopback); a box without
// network gets no NIC at all.
func TestNetworkArgs(t *testing.T) {
	e := New(Config{Home: t.TempDir()})
	img := &image.Image{Name: "default", Dir: "/images/default"}
	for _, tc := range []struct {
		name  string
		spec  sandbox.Spec
		netdv string // the -netdev argument, "" for none
	}{
		{"no network", sandbox.Spec{ID: "01abcdefghjkmnpqrstvwxyz01", CPUs: 1, MemoryMiB: 256, Socket: "/run/a.sock"}, ""},
		{"public", sandbox.Spec{ID: "01abcdefghjkmnpqrstvwxyz01", CPUs: 1, MemoryMiB: 256, Socket: "/run/a.sock", Network: true},
			"stream,id=net0,server=off,addr.type=fd,addr.str=9"},
		{"allow list, a comma in the path", sandbox.Spec{ID: "01abcdefghjkmnpqrstvwxyz01", CPUs: 1, MemoryMiB: 256, Socket: "/run/a,b.sock",
			Network: true, NetworkAllow: []string{"pypi.org"}}, "stream,id=net0,server=off,addr.type=fd,addr.str=9"},
	} {
		files := &vmFiles{disk: 0, diskRO: 5, console: 1, qmp: 2, agent: 4, vhost: -1, link: -1}
		if tc.spec.Network {
			files.link = 3 // descriptor 3+6 confined
		}
		args := e.commandLine(tc.spec, img, state{Channel: "serial"}, "/initrd", files)
		i := slices.Index(args, "-netdev")
		switch {
		case tc.netdv == "" && i >= 0:
			t.Errorf("%s: a NIC without network: %v", tc.name, args)
		case tc.netdv != "" && (i < 0 || args[i+1] != tc.netdv):
			t.Errorf("%s: -netdev %v, want %q", tc.name, args, tc.netdv)
		case tc.netdv != "" && !slices.Contains(args, "virtio-net-device,netdev=net0,mac="+network.GuestMAC):
			t.Errorf("%s: no virtio-net device: %v", tc.name, args)
		}
		if j := strings.Join(args, " "); strings.Contains(j, "user,") || strings.Contains(j, "hostfwd") {
			t.Errorf("%s: QEMU's user network in %q", tc.name, j)
		}
		if got := bootNet(tc.spec); (got != nil) != tc.spec.Network {
			t.Errorf("%s: boot network configuration %v", tc.name, got)
		}
	}
}
