// Command boxlite-guest is the guest agent: the program every box runs to
// serve boxlite-mcp. Build it static (CGO_ENABLED=0); the same binary serves
// every engine, chosen by --listen.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/boxlite-ai/boxlite-mcp/guestagent"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/jailspec"
	"github.com/boxlite-ai/boxlite-mcp/internal/netconf"
)

func main() {
	var (
		listen   = flag.String("listen", "", "transport: unix:PATH, vsock:PORT, fd:N, tcp:127.0.0.1:PORT (loopback only) or serial:NAME")
		init_    = flag.Bool("init", os.Getpid() == 1, "do the first-process duties (mounts, reaping); default on as PID 1")
		modules  = flag.String("modules", "", "comma-separated kernel module files to load, in order")
		rootDev  = flag.String("root", "", "block device to mount and switch into, e.g. /dev/vda")
		rootFS   = flag.String("rootfstype", "ext4", "file system of --root")
		hostname = flag.String("hostname", "", "host name to set")
		noDev    = flag.Bool("no-devtmpfs", false, "do not mount devtmpfs on /dev")
		noMounts = flag.Bool("no-mounts", false, "do no mounts at all (the jail did them)")
		outLimit = flag.Int64("output-limit", 0, "default per-exec output cap in bytes")
		maxFile  = flag.Int64("max-file-size", 0, "file read/write cap in bytes")
		jailInit = flag.Bool("jail-init", false, "set up a jail handed over by the jail engine, then serve on fd 3")
		netJSON  = flag.String("net", "", "network configuration (JSON) to apply after the init duties")
		hold     = flag.Bool("hold", false, "wait until stdin ends, then exit (the jail engine holds a user namespace with it)")
		confine  = flag.Bool("confine", false, "confine and execute a box's host-side helper (QEMU, krun shim, network helper) as the host's launcher asks on stdin")
		contain  = flag.Bool("container", false, "run as a container's first process (a Kubernetes box): reap orphans, no mounts, no host name")
		install  = flag.String("install", "", "copy this binary to the given path and exit (the init container of a Kubernetes box)")
		verbose  = flag.Bool("v", false, "debug logging")
		version  = flag.Bool("version", false, "print the version and exit")
	)
	flag.Parse()
	if *version {
		fmt.Println(guestagent.Version)
		return
	}
	if *install != "" {
		if err := guestagent.InstallSelf(*install); err != nil {
			fmt.Fprintf(os.Stderr, "boxlite install: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *confine {
		err := guestagent.ConfineExec() // returns only on failure
		fmt.Fprintf(os.Stderr, "boxlite confine: %v\n", err)
		os.Exit(125)
	}
	if *hold {
		var b [1]byte
		for {
			if _, err := os.Stdin.Read(b[:]); err != nil {
				return
			}
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "boxlite-guest")
	var work *guestagent.WorkCgroup
	var netCfg *netconf.Config
	if *netJSON != "" {
		netCfg = new(netconf.Config)
		if err := json.Unmarshal([]byte(*netJSON), netCfg); err != nil {
			log.Error("--net", "err", err)
			os.Exit(2)
		}
	}
	workPids := 0
	if *jailInit {
		var err error
		if _, work, err = guestagent.JailInit(); err != nil {
			fmt.Fprintf(os.Stderr, "boxlite jail init: %v\n", err)
			os.Exit(125)
		}
		*listen, *init_, *noMounts = fmt.Sprintf("fd:%d", jailspec.FDListener), true, true
	}
	if *listen == "" && os.Getpid() == 1 {
		// Booted by a VM engine as /init: the configuration is in the initramfs.
		if b, err := os.ReadFile(guestagent.BootConfigPath); err == nil {
			var bc guestagent.BootConfig
			if err := json.Unmarshal(b, &bc); err != nil {
				log.Error("boot config", "err", err)
			}
			*listen, *modules, *rootDev, *hostname = bc.Listen, strings.Join(bc.Modules, ","), bc.Root, bc.Hostname
			workPids = bc.WorkPidsMax
			netCfg = bc.Net
			if bc.RootFSType != "" {
				*rootFS = bc.RootFSType
			}
			for _, kv := range bc.Env {
				if k, v, ok := strings.Cut(kv, "="); ok {
					os.Setenv(k, v)
				}
			}
		}
	}
	if *listen == "" {
		log.Error("--listen is required")
		os.Exit(2)
	}
	// Listen before the init duties: a unix socket must be bound on the
	// file system the host sees, before /tmp and friends are mounted over.
	serial, isSerial := strings.CutPrefix(*listen, "serial:")
	// vsock and serial need the kernel modules Init loads: listen after it.
	early := strings.HasPrefix(*listen, "unix:") || strings.HasPrefix(*listen, "fd:")
	var l net.Listener
	if early {
		var err error
		if l, err = guestagent.Listen(*listen); err != nil {
			log.Error("listen", "err", err)
			os.Exit(1)
		}
	}
	cfg := guestagent.Config{OutputLimit: *outLimit, MaxFileSize: *maxFile, Logger: log, Work: work}
	if *contain {
		// The container runtime did the mounts and applied the image's
		// user, env and working directory: runs and sessions start where
		// the agent was started.
		*noMounts, *hostname = true, ""
		cfg.SessionCwd, _ = os.Getwd()
	}
	if *init_ {
		var mods []string
		if *modules != "" {
			mods = strings.Split(*modules, ",")
		}
		// Init failures are logged and the agent serves whatever it can,
		// except without its root file system: then the box powers off
		// and the engine reports the console.
		wc, err := guestagent.Init(guestagent.InitConfig{Modules: mods, RootDevice: *rootDev, RootFSType: *rootFS, Hostname: *hostname,
			SkipDevtmpfs: *noDev, NoMounts: *noMounts, WorkPidsMax: workPids}, log)
		if errors.Is(err, guestagent.ErrNoRoot) {
			log.Error("cannot mount the root file system; powering off", "err", err)
			guestagent.PowerOff(false)
			os.Exit(1)
		}
		if wc != nil {
			cfg.Work = wc
		}
		if netCfg != nil {
			if err := guestagent.ConfigureNetwork(*netCfg); err != nil {
				log.Error("network setup failed; the box has no network", "err", err)
			}
		}
		if netCfg != nil {
			nc := *netCfg
			cfg.Renetwork = func() error { return guestagent.ConfigureNetwork(nc) }
		}
		if !*contain { // a container ends by its first process exiting (the default)
			cfg.PowerOff = guestagent.PowerOff
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := guestagent.NewServer(cfg)
	log.Info("serving", "listen", *listen, "version", guestagent.Version, "pid", os.Getpid())
	if !isSerial && !early {
		var err error
		if l, err = guestagent.Listen(*listen); err != nil {
			log.Error("listen", "err", err)
			guestagent.PowerOff(false)
			os.Exit(1)
		}
	}
	var err error
	if isSerial {
		err = srv.ServeSerial(ctx, serial)
	} else {
		err = srv.Serve(ctx, l)
	}
	if err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
