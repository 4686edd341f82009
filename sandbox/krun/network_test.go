package krun_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/proc"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/krun"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// TestKrunNetworkWithLibkrunTestDouble runs a box with network against the
// TEST DOUBLE of libkrun (testdata/fakekrun.c), not a VM: the engine starts
// the box's network helper, the double's krun_add_net_unixstream takes the
// shim's end of the link (a descriptor, as libkrun's virtio-net can) after TSI was
// turned off, the agent is told its eth0 configuration, the helper applies
// the box's policy, and stopping the box ends the helper.
func TestKrunNetworkWithLibkrunTestDouble(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	home := builtImageHome(t)
	fe := newFakeEnv(t, home)
	cfg := engineConfig(t, fe)
	cfg.Net = network.Host{Resolvers: []string{"127.0.0.1:9"}}
	eng := krun.New(cfg)
	ctx := context.Background()
	spec := specFor(home, "01krunnetwork0000000000000")
	spec.Network, spec.NetworkAllow = true, []string{"192.0.2.10"}
	h, err := eng.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Destroy(context.Background(), spec, h) })
	var st struct {
		Net *proc.ID `json:"net"`
	}
	if err := json.Unmarshal(h.State, &st); err != nil || st.Net == nil || !st.Net.Alive() {
		t.Fatalf("no live network helper in the handle: %s (%v)", h.State, err)
	}
	calls, _ := os.ReadFile(fe.log)
	log := string(calls)
	// No offloads: the helper takes plain frames of at most the MTU. The
	// link is a descriptor (the confined shim has no path to it).
	link := fmt.Sprintf("krun_add_net_unixstream 0 (fd) mac=%s features=0 flags=0 tsi_off=1 connected=1", network.GuestMAC)
	for _, want := range []string{link, "krun_disable_implicit_vsock 0", "krun_add_vsock 0 tsi=0", "arg --net", `"address":"192.168.127.2/24"`} {
		if !strings.Contains(log, want) {
			t.Errorf("call log lacks %q:\n%s", want, log)
		}
	}
	s, err := network.Query(ctx, network.ControlPath(spec.Socket), time.Time{})
	if err != nil || s.Mode != "allowlist" || !strings.Contains(s.Policy, "192.0.2.10") {
		t.Fatalf("helper status %+v, %v", s, err)
	}
	if err := eng.Stop(ctx, spec, h, time.Second); err != nil {
		t.Fatal(err)
	}
	if !st.Net.Wait(5 * time.Second) {
		t.Error("the network helper outlived its box")
	}
}
