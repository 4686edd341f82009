package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
	"github.com/boxlite-ai/boxlite-mcp/tools"
	"github.com/boxlite-ai/boxlite-mcp/tools/transport"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var (
		transportName = fs.String("transport", "stdio", "stdio, http or sse (http also serves SSE)")
		listen        = fs.String("listen", "127.0.0.1:7070", "HTTP listen address")
		home          = fs.String("home", defaultHome(), "boxlite home directory")
		engine        = fs.String("engine", "auto", "auto, krun, qemu, jail or k8s")
		tokenFile     = fs.String("token-file", "", "file of 'OWNER TOKEN' lines; required to listen beyond loopback")
		stopOnExit    = fs.Bool("stop-boxes-on-exit", false, "stop every running box when the server exits")
		idle          = fs.Duration("idle-timeout", 15*time.Minute, "stop boxes unused this long")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		grace         = fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight calls may finish on SIGTERM")
		maxSessions   = fs.Int("max-sessions", transport.DefaultMaxSessions, "open HTTP/SSE MCP sessions allowed in total")
		ownerSessions = fs.Int("owner-max-sessions", transport.DefaultOwnerMaxSessions, "open HTTP/SSE MCP sessions allowed per owner (token); without --token-file only --max-sessions applies")
		maxCalls      = fs.Int("max-calls", tools.DefaultMaxCalls, "tool calls in flight allowed in total")
		ownerCalls    = fs.Int("owner-max-calls", tools.DefaultOwnerMaxCalls, "tool calls in flight allowed per owner (token); without --token-file only --max-calls applies")
		maxMemory     = fs.Int("max-memory-mib", 0, "memory all running boxes may hold together (default: the host's RAM minus 1 GiB)")
		maxBoxes      = fs.Int("max-boxes", 0, "most boxes on this home (0: no limit)")
		ownerBoxes    = fs.Int("owner-max-boxes", 0, "most boxes one owner (token) may have (0: no limit)")
		maxSnapGiB    = fs.Float64("max-snapshot-gib", 20, "disk space all snapshots on this home may take together, in GiB (0: no limit)")
		fixtures      = fs.Bool("conformance-fixtures", false, "also register the MCP conformance suite's test tools (testing only)")
		pull          = fs.String("pull", "missing", "when create_box pulls an image reference: missing, never or always (re-check the tag)")
		allowImages   stringList
		resolvConf    = fs.String("resolv-conf", network.DefaultResolvConf, "resolv.conf naming the upstream DNS servers of the boxes' resolvers")
		origins       stringList
		poolFlags     stringList
	)
	kf := addK8sFlags(fs)
	fs.Var(&poolFlags, "pool", "keep N booted, pre-warmed boxes of the default shape ready on ENGINE, as ENGINE=N (repeatable)")
	fs.Var(&origins, "allow-origin", "extra allowed browser Origin (repeatable)")
	fs.Var(&allowImages, "allow-image", "image references create_box accepts, e.g. docker.io/library/* (repeatable; default: any)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	switch *transportName {
	case "stdio", "http", "sse":
	default:
		return usageError{fmt.Sprintf("--transport %q: want stdio, http or sse", *transportName)}
	}
	var tokens map[string]string
	if *tokenFile != "" {
		if tokens, err = transport.LoadTokens(*tokenFile); err != nil {
			return err
		}
	}
	if *maxSessions < 1 || *ownerSessions < 1 {
		return usageError{"--max-sessions and --owner-max-sessions must be at least 1"}
	}
	if *maxCalls < 1 || *ownerCalls < 1 {
		return usageError{"--max-calls and --owner-max-calls must be at least 1"}
	}
	if *transportName != "stdio" && tokens == nil && !transport.IsLoopback(*listen) {
		return fmt.Errorf("refusing to listen on %s without --token-file: unauthenticated access is only allowed on loopback", *listen)
	}

	if err := os.MkdirAll(*home, 0o700); err != nil {
		return fmt.Errorf("home %s: %w", *home, err)
	}
	store, err := persist.Open(ctx, filepath.Join(*home, "boxlite.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	netHost.ResolvConf = *resolvConf
	var engs []sandbox.Engine
	if *engine != "k8s" { // --engine k8s: the cluster's engine only
		if engs, err = engines(*home, log, *engine); err != nil {
			return err
		}
	}
	if engs, err = withK8s(engs, kf, log, *engine); err != nil {
		return err
	}
	if *maxMemory < 0 || *maxBoxes < 0 || *ownerBoxes < 0 || *maxSnapGiB < 0 {
		return usageError{"--max-memory-mib, --max-boxes, --owner-max-boxes and --max-snapshot-gib must not be negative"}
	}
	var engNames []string
	for _, e := range engs {
		engNames = append(engNames, e.Name())
	}
	pools, err := parsePools(poolFlags, engNames)
	if err != nil {
		return err
	}
	images, err := imageSource(*home, store, *pull, allowImages, *tokenFile != "", log)
	if err != nil {
		return err
	}
	m, err := sandbox.New(sandbox.Config{Home: *home, Store: store, Engines: engs, IdleTimeout: *idle, Logger: log,
		MaxMemoryMiB: *maxMemory, MaxBoxes: *maxBoxes, OwnerMaxBoxes: *ownerBoxes, MaxSnapshotBytes: int64(*maxSnapGiB * (1 << 30)),
		ClientName: "boxlite-mcp/" + Version, Images: images, Pools: pools})
	if err != nil {
		return err
	}
	defer m.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	m.Reconcile(rctx)
	cancel()
	m.StartReaper()
	m.StartPool()

	chosen, why, perr := m.PickEngine(ctx, "auto")
	if perr != nil {
		log.Warn("no engine is usable: create_box will fail until one is", "why", sandbox.PublicMessage(perr))
	} else {
		log.Info("default engine", "engine", chosen.Name(), "why", why)
	}

	if *tokenFile == "" {
		*ownerCalls = *maxCalls // one owner: the per-owner cap is the total
	}
	srv, err := tools.NewMCPServer(tools.Config{Manager: m, Logger: log, MaxCalls: *maxCalls, OwnerMaxCalls: *ownerCalls})
	if err != nil {
		return err
	}
	if *fixtures {
		tools.AddConformanceFixtures(srv)
	}
	defer func() {
		if *stopOnExit {
			dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if n := m.DrainPool(dctx); n > 0 {
				log.Info("drained the warm pool on exit", "boxes", n)
			}
			cancel()
			stopAll(m, log)
		}
	}()
	if *transportName == "stdio" {
		log.Info("serving MCP on stdio", "home", *home, "version", Version)
		return transport.ServeStdio(ctx, srv, os.Stdin, os.Stdout, log)
	}
	return transport.ServeHTTP(ctx, transport.HTTPConfig{MCP: srv, Listen: *listen, Tokens: tokens, AllowOrigins: origins, Logger: log,
		MaxSessions: *maxSessions, OwnerMaxSessions: *ownerSessions},
		*grace, func(addr string) {
			engineLine := "none usable"
			if chosen != nil {
				engineLine = why
			}
			printServing(stderr, addr, engineLine, *home, tokens != nil)
		})
}

// stopAll stops every running box (for --stop-boxes-on-exit).
func stopAll(m *sandbox.Manager, log interface{ Info(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	boxes, err := m.AllBoxes(ctx)
	if err != nil {
		return
	}
	for _, b := range boxes {
		if b.Status == sandbox.StatusRunning {
			m.Stop(ctx, b.Owner, b.ID)
			log.Info("stopped box on exit", "box_id", b.ID)
		}
	}
}
