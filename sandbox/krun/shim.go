package krun

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
)

// ShimArg is the hidden first argument that turns the boxlite-mcp binary
// into a box's krun shim. krun_start_enter never returns and takes over its
// process (and libkrun ends the whole process when the guest stops), so it
// must never run in the server: each box gets its own shim process.
// Binaries embedding the engine call ShimMain when they see ShimArg.
const ShimArg = "__boxlite-krun-shim"

// shimConfig is sent to the shim on stdin (never on argv: it carries the
// box's environment, which may hold secrets).
type shimConfig struct {
	Library    string   `json:"library"` // dlopen name or path
	LogLevel   uint32   `json:"log_level"`
	CPUs       uint8    `json:"cpus"`
	MemoryMiB  uint32   `json:"memory_mib"`
	Disk       string   `json:"disk"` // the box's qcow2 overlay
	RootDevice string   `json:"root_device"`
	Console    string   `json:"console"`
	Socket     string   `json:"socket"` // host side of the agent's vsock port
	Port       uint32   `json:"port"`
	Network    bool     `json:"network"`
	Exec       string   `json:"exec"`
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	Workdir    string   `json:"workdir"`
	Rlimits    []string `json:"rlimits"`
	ExitRecord string   `json:"exit_record"`
	// NetFD, when positive, is the shim's descriptor of the box's network
	// link (its end of a socket pair whose other end is the box's network
	// helper) for a virtio-net NIC with MAC NetMAC.
	NetFD  int    `json:"net_fd,omitempty"`
	NetMAC string `json:"net_mac,omitempty"`
}

// exitRecord is what a shim leaves when it fails before the VM boots.
type exitRecord struct {
	Reason string `json:"reason"`
	Code   int    `json:"code"`
}

// ShimMain configures libkrun from the JSON on stdin and enters the VM. It
// returns only by exiting: on failure before boot it writes the exit record
// and exits 1; after boot libkrun exits with the guest. It runs confined
// (see spawnShim): the server has recorded it before it runs at all.
func ShimMain() {
	runtime.LockOSThread() // libkrun runs its event loop on this thread
	var cfg shimConfig
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fmt.Fprintf(os.Stderr, "boxlite krun shim: reading config: %v\n", err)
		os.Exit(2)
	}
	if err := shim(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "boxlite krun shim: %v\n", err)
		if cfg.ExitRecord != "" {
			b, _ := json.Marshal(exitRecord{Reason: err.Error(), Code: 1})
			os.WriteFile(cfg.ExitRecord, b, 0o600)
		}
		os.Exit(1)
	}
	os.Exit(0) // not reached with a real libkrun
}

func shim(cfg shimConfig) error {
	lib, err := Open(cfg.Library)
	if err != nil {
		return err
	}
	if m := lib.Missing(); len(m) > 0 {
		return fmt.Errorf("%w: missing %v", ErrMissingSymbol, m)
	}
	if err := lib.SetLogLevel(cfg.LogLevel); err != nil {
		return err
	}
	ctx, err := lib.CreateCtx()
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error { return lib.SetVMConfig(ctx, cfg.CPUs, cfg.MemoryMiB) },
		func() error { return lib.SetConsoleOutput(ctx, cfg.Console) },
		func() error { return lib.AddDisk2(ctx, "root", cfg.Disk, DiskQcow2, false) },
		func() error { return lib.SetRootDiskRemount(ctx, cfg.RootDevice, "ext4", "") },
	}
	// Never TSI: the guest gets an IPC-only vsock, and its only network
	// is the virtio-net link to the box's network helper, when it has one.
	steps = append(steps,
		func() error { return lib.DisableImplicitVsock(ctx) },
		func() error { return lib.AddVsock(ctx, 0) })
	if cfg.NetFD > 0 {
		steps = append(steps, func() error { return lib.AddNetUnixstream(ctx, "", cfg.NetFD, cfg.NetMAC) })
	}
	steps = append(steps,
		func() error { return lib.AddVsockPort2(ctx, cfg.Port, cfg.Socket, true) },
		func() error { return lib.SetExec(ctx, cfg.Exec, cfg.Args, cfg.Env) },
		func() error { return lib.SetWorkdir(ctx, cfg.Workdir) },
		func() error { return lib.SetRlimits(ctx, cfg.Rlimits) },
	)
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return lib.StartEnter(ctx)
}
