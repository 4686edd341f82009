package qemu

import (
	"context"
	"errors"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

func TestGuestCID(t *testing.T) {
	for _, tt := range []struct {
		idRange int
		want    uint32 // 0: refused
	}{
		{0, 1000},
		{1, 1001},
		{persist.MaxIDRanges - 1, 1000 + persist.MaxIDRanges - 1},
		{-1, 0}, // a row without a range
		{persist.MaxIDRanges, 0},
	} {
		got, err := guestCID(sandbox.Spec{ID: "b", IDRange: tt.idRange})
		if got != tt.want || (err != nil) != (tt.want == 0) {
			t.Errorf("range %d: CID %d, %v; want %d", tt.idRange, got, err, tt.want)
		}
	}
	// Two boxes whose ids collide under the old CID (fnv32a of the id
	// modulo 2^30) get distinct CIDs from their distinct ranges.
	a, b := collidingIDs(t)
	ca, _ := guestCID(sandbox.Spec{ID: a, IDRange: 0})
	cb, _ := guestCID(sandbox.Spec{ID: b, IDRange: 1})
	if ca == cb {
		t.Errorf("boxes %s and %s share CID %d", a, b, ca)
	}
}

// collidingIDs finds two box ids with the same fnv32a hash modulo 2^30
// (a birthday search: some tens of thousands of ids).
func collidingIDs(t *testing.T) (string, string) {
	seen := map[uint32]string{}
	for range 2_000_000 {
		id := persist.NewID()
		h := fnv.New32a()
		h.Write([]byte(id))
		k := h.Sum32() % (1 << 30)
		if other, ok := seen[k]; ok && other != id {
			return other, id
		}
		seen[k] = id
	}
	t.Fatal("no collision found")
	return "", ""
}

// TestBootErrorCIDTaken: QEMU refusing a guest CID another VM holds is
// reported as that, with the CID, and is not retried as a hung boot.
func TestBootErrorCIDTaken(t *testing.T) {
	const qemuLog = "qemu-system-x86_64: -device vhost-vsock-device,guest-cid=1003: vhost-vsock: unable to set guest cid: Address already in use\n"
	for _, tt := range []struct {
		name, channel, log string
		taken              bool
	}{
		{"vsock CID in use", "vsock", qemuLog, true},
		{"other vhost error", "vsock", "vhost-vsock: unable to set guest cid: Operation not permitted", false},
		{"serial channel", "serial", qemuLog, false},
		{"hung boot", "vsock", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "qemu.log"), []byte(tt.log), 0o600)
			e := New(Config{})
			err := e.bootError(context.Background(), sandbox.Spec{ID: "b", BoxDir: dir}, state{Channel: tt.channel, CID: 1003},
				errors.New("the box process exited during start (exit status 1)"), time.Minute, filepath.Join(dir, "console.log"), 0)
			msg := sandbox.PublicMessage(err)
			if !errors.Is(err, sandbox.ErrUnavailable) || strings.Contains(msg, dir) {
				t.Fatalf("error %v (public %q)", err, msg)
			}
			said := strings.Contains(msg, "CID 1003") && strings.Contains(msg, "another program")
			if said != tt.taken || errors.Is(err, errNoBoot) == tt.taken {
				t.Errorf("public %q, retried as a hung boot: %v; want CID-taken %v", msg, errors.Is(err, errNoBoot), tt.taken)
			}
		})
	}
}
