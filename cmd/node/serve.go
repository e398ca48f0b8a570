package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster"
)

const serveHelp = `usage: switchboard serve [--config FILE] [--print-config] [flags]

Run a node: listen on the socket and serve clients until SIGINT or SIGTERM.

Configuration comes from the built-in default, then the TOML file given to
--config (or $SWITCHBOARD_CONFIG), then SWITCHBOARD_* environment variables,
then flags; each setting below is also a key in the file (log-level is
log.level, events-queue-limit is events.queue_limit) and an environment
variable (SWITCHBOARD_LOG_LEVEL). "switchboard serve --print-config" shows the
result; a bad setting is refused at start with the key named.

SIGHUP reloads the file: the policy and log.level change at once, without
dropping any connection; other changes are logged as needing a restart;
a file that does not load is logged and the configuration in force kept.

Under systemd, the node takes a socket passed by socket activation
(LISTEN_FDS) and reports READY=1, STATUS, RELOADING=1 and STOPPING=1 to
$NOTIFY_SOCKET (examples/systemd). With WatchdogSec= ($WATCHDOG_USEC), it
sends WATCHDOG=1 every half of it, each after a probe through its own
socket succeeded: a wedged node misses its pings.

Exit codes: 0 stopped cleanly, 1 failed while serving, 2 bad flags or
configuration, 3 cannot listen on the socket.

flags:
`

func cmdServe(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("serve", serveHelp)
	configPath := fs.String("config", os.Getenv("SWITCHBOARD_CONFIG"), "TOML configuration `file` (default $SWITCHBOARD_CONFIG, else the built-in)")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as TOML and exit")
	var flags []override
	for _, s := range settings {
		fs.Func(s.flag(), s.usage+" (key "+s.key+")", func(v string) error {
			flags = append(flags, override{s, v})
			return nil
		})
	}
	if code, ok := parseFlags(fs, args, std); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(std.stderr, "switchboard serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	ld := newLoader(*configPath, flags)
	cfg, pol, err := ld.load()
	if err != nil {
		fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
		return exitUsage
	}
	if *printConfig {
		if err := writeTOML(std.stdout, cfg); err != nil {
			fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	return serve(ctx, ld, cfg, pol, std.stderr)
}

// newLogger builds the daemon's logger on w; level can change later.
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the node until ctx ends, reloading on SIGHUP. It owns every
// goroutine it starts: the node's accept loop, the metrics server and the
// watchdog.
func serve(ctx context.Context, ld *loader, cfg *Config, pol *policy, stderr io.Writer) int {
	level := new(slog.LevelVar)
	lv, _ := parseLevel(cfg.Log.Level)
	level.Set(lv)
	log := newLogger(stderr, cfg.Log.Format, level)

	sd, err := newNotifier()
	if err != nil {
		log.Warn("no sd_notify", slog.String("error", err.Error()))
	}
	defer sd.close()
	wdInterval, err := watchdogInterval()
	if err != nil {
		log.Warn("no watchdog", slog.String("error", err.Error()))
	}
	ln, err := activationListener()
	if err != nil {
		log.Error("socket activation", slog.String("error", err.Error()))
		return exitUnavail
	}
	overflow, _ := parseOverflow(cfg.Events.Overflow)
	opts := []switchboard.NodeOption{
		switchboard.WithNodeName(cfg.Name),
		switchboard.WithLogger(log),
		// Who may connect is the policy's decision (policy.connect), so
		// that a reload can change it.
		switchboard.WithAuthorize(func(switchboard.Cred) error { return nil }),
		switchboard.WithPolicy(pol),
		switchboard.WithMaxMessage(int(cfg.MaxMessage)),
		switchboard.WithRings(int(cfg.Rings.Request), int(cfg.Rings.Response), int(cfg.Rings.Event)),
		switchboard.WithMaxRing(int(cfg.Rings.Max)),
		switchboard.WithUIDLimits(int(cfg.Limits.ConnectionsPerUID), int(cfg.Limits.HandshakesPerUID)),
		switchboard.WithPrivilegedLimits(int(cfg.Limits.PrivilegedConnections), int(cfg.Limits.PrivilegedHandshakes)),
		switchboard.WithEventQueue(int(cfg.Events.QueueLimit)), switchboard.WithEventQueueBytes(int(cfg.Events.QueueBytes)), switchboard.WithOverflow(overflow),
		switchboard.WithHandshakeTimeout(cfg.HandshakeTimeout),
	}
	if adaptiveProcs(cfg) {
		opts = append(opts, switchboard.WithAdaptiveProcs())
	}
	if ln != nil {
		opts = append(opts, switchboard.WithListener(ln))
		if a := ln.Addr().String(); a != cfg.Socket {
			log.Info("serving the socket systemd passed; the socket setting does not apply",
				slog.String("activated", a), slog.String("configured", cfg.Socket))
		}
		if cfg.SocketMode != "" || cfg.SocketGroup != "" {
			log.Info("serving the socket systemd passed; socket_mode and socket_group do not apply (SocketMode and SocketGroup in the socket unit do)")
		}
	} else {
		opts = append(opts, switchboard.WithSocket(cfg.Socket))
		if mode, ok, _ := parseSocketMode(cfg.SocketMode); ok {
			opts = append(opts, switchboard.WithSocketMode(mode))
		}
		if cfg.SocketGroup != "" {
			opts = append(opts, switchboard.WithSocketGroup(cfg.SocketGroup))
		}
	}
	var reg *metrics
	if cfg.Metrics.Listen != "" {
		reg = newMetrics(cfg.Metrics)
		opts = append(opts, reg.nodeOptions()...)
	}
	var fed *cluster.Federation
	if cfg.Cluster.Enabled {
		var err error
		fed, err = cfg.Cluster.federation(cfg.MaxMessage, log)
		if err == nil {
			opts = append(opts, switchboard.WithFederation(fed))
			defer fed.Close() // after the node's own Close; idempotent
		}
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			log.Error("configuration", slog.String("error", err.Error()))
			return exitUsage
		}
	}
	n, err := switchboard.NewNode(opts...)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		log.Error("configuration", slog.String("error", err.Error()))
		return exitUsage
	}
	if err := n.Listen(); err != nil {
		log.Error("cannot listen", slog.String("error", err.Error()))
		n.Close()
		return exitUnavail
	}
	var metrics *metricsServer
	if reg != nil {
		reg.attach(n, int(cfg.Metrics.ConnectionsLimit))
		if fed != nil {
			reg.attachFederation(n, fed)
		}
		if metrics, err = listenMetrics(cfg.Metrics.Listen, reg.reg, log); err != nil {
			log.Error("cannot serve metrics", slog.String("error", err.Error()))
			n.Close()
			return exitUnavail
		}
		log.Info("metrics serving", slog.String("listen", metrics.addr()))
	}

	// SIGHUP is caught from here on; before, it would end the process,
	// as it should while there is nothing to reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }() // ends when n.Close closes the listener
	log.Info("node serving", slog.String("socket", n.SocketPath()), slog.String("name", cfg.Name),
		slog.Int("pid", os.Getpid()), slog.Bool("socket_activated", ln != nil))
	if announceServing(isTTY(stderr), cfg.Log.Format, level.Level()) {
		fmt.Fprintf(stderr, "%s: node %s serving on %s (pid %d; Ctrl-C stops it)\n", prog, cfg.Name, n.SocketPath(), os.Getpid())
	}
	notifyOrLog(log, sd, "READY=1", "STATUS="+statusLine(n))
	var wd *watchdog
	switch {
	case wdInterval > 0 && !sd.enabled():
		log.Info("watchdog: $WATCHDOG_USEC is set but there is no $NOTIFY_SOCKET to ping; no watchdog")
	case wdInterval > 0:
		wd = startWatchdog(wdInterval, probeNode(n.SocketPath()), func() { notifyOrLog(log, sd, "WATCHDOG=1") }, log)
		log.Info("watchdog pinging systemd", slog.Duration("every", wdInterval))
	}

	code, servedErr := exitOK, false
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-served:
			servedErr = true
			if err != nil {
				log.Error("serve", slog.String("error", err.Error()))
				code = exitFailure
			}
			break loop
		case <-hup:
			notifyOrLog(log, sd, reloading()...)
			var err error
			cfg, err = reload(log, ld, cfg, n, level)
			status := statusLine(n) + "; configuration reloaded " + time.Now().Format(time.DateTime)
			if err != nil {
				status = statusLine(n) + "; configuration refused " + time.Now().Format(time.DateTime) + ": " + err.Error()
			}
			notifyOrLog(log, sd, "READY=1", "STATUS="+status)
		}
	}
	if wd != nil {
		wd.stop() // no WATCHDOG=1 after STOPPING=1
	}
	notifyOrLog(log, sd, "STOPPING=1", "STATUS=stopping")
	log.Info("node stopping")
	if metrics != nil {
		// Before the node closes: a scrape in flight would otherwise wait
		// in the node's listing while it shuts down.
		metrics.stop()
	}
	if err := n.Close(); err != nil {
		log.Error("close", slog.String("error", err.Error()))
		code = exitFailure
	}
	if !servedErr {
		<-served
	}
	log.Info("node stopped")
	return code
}

// reload loads the configuration again and applies what can change live
// (the policy, log.level). It returns the configuration now in force,
// and why the new one was refused if it was.
func reload(log *slog.Logger, ld *loader, cur *Config, n *switchboard.Node, level *slog.LevelVar) (*Config, error) {
	next, pol, err := ld.load()
	if err != nil {
		log.Error("configuration refused; the one in force is kept", slog.String("error", err.Error()))
		return cur, err
	}
	applied := *cur
	for _, key := range next.restartKeys(cur) {
		s := settingByKey(key)
		log.Warn("setting changed; needs restart", slog.String("key", key),
			slog.String("running", s.value(cur)), slog.String("configured", s.value(next)))
	}
	lv, _ := parseLevel(next.Log.Level)
	level.Set(lv)
	applied.Log.Level = next.Log.Level
	applied.Policy = next.Policy
	n.SetPolicy(pol)
	log.Info("configuration reloaded", slog.String("file", ld.path))
	return &applied, nil
}

func settingByKey(key string) setting {
	for _, s := range settings {
		if s.key == key {
			return s
		}
	}
	panic("config: no setting " + key)
}

func statusLine(n *switchboard.Node) string {
	st := n.Stats()
	return fmt.Sprintf("serving %s on %s: %d connections", st.Name, n.SocketPath(), st.Connections)
}

func notifyOrLog(log *slog.Logger, sd *notifier, lines ...string) {
	if err := sd.notify(lines...); err != nil {
		log.Warn("sd_notify", slog.String("state", strings.Join(lines, " ")), slog.String("error", err.Error()))
	}
}

// adaptiveProcs reports whether the node governs its Ps (the procs
// setting): auto does with the cluster on, unless GOMAXPROCS was set.
func adaptiveProcs(cfg *Config) bool {
	switch cfg.Procs {
	case "adaptive":
		return true
	case "auto":
		_, set := os.LookupEnv("GOMAXPROCS")
		return cfg.Cluster.Enabled && !set
	}
	return false
}
