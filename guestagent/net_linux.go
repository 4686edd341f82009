package guestagent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
)

// ConfigureNetwork sets up a VM's network from its boot configuration: the
// interface (address, MTU, up, default route), lo, and /etc/resolv.conf
// naming the engine's resolver. It runs after the switch to the root disk.
func ConfigureNetwork(c netconf.Config) error {
	// The NIC appears when its driver module is loaded; give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := net.InterfaceByName(c.Interface); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("network interface %s: %w", c.Interface, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := netconf.Configure(c); err != nil {
		return err
	}
	return writeResolvConf("/etc/resolv.conf", c.Nameserver.String())
}

// writeResolvConf replaces path (a symlink there included) with a file
// naming nameserver.
func writeResolvConf(path, nameserver string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".resolv.conf-")
	if err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(netconf.ResolvConf(nameserver)); err != nil {
		tmp.Close()
		return fmt.Errorf("resolv.conf: %w", err)
	}
	tmp.Chmod(0o644)
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}
