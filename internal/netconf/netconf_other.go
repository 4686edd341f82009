//go:build !linux

package netconf

import "errors"

// Configure needs Linux: boxes' networks are configured only there.
func Configure(c Config) error { return errors.New("netconf: configuring a box's network needs Linux") }
