// Package netconf configures a box's network interface: its address, MTU,
// link state and default route, in the network namespace of the calling
// thread, with the classic ioctls (no netlink library, nothing to exec).
// The jail engine runs it inside a box's namespace; the guest agent runs it
// in a VM. It imports nothing of ours.
package netconf

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// Config is a box's IPv4 network configuration. It travels as JSON (the
// VM's boot configuration).
type Config struct {
	Interface  string       `json:"interface"`
	Address    netip.Prefix `json:"address"` // the box's address and prefix length
	Gateway    netip.Addr   `json:"gateway"` // the default route
	Nameserver netip.Addr   `json:"nameserver"`
	MTU        int          `json:"mtu,omitempty"`
}

// ResolvConf is the content of a box's /etc/resolv.conf naming nameserver.
func ResolvConf(nameserver string) []byte {
	return fmt.Appendf(nil, "# written by boxlite: the box's own resolver, which applies its network policy\nnameserver %s\n", nameserver)
}

// String is the configuration as JSON.
func (c Config) String() string {
	b, _ := json.Marshal(c)
	return string(b)
}
