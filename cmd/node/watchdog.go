package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// The systemd watchdog (sd_watchdog_enabled(3), WatchdogSec= in the
// unit): systemd sets WATCHDOG_USEC (and WATCHDOG_PID), and kills the
// service if no WATCHDOG=1 comes within that time. The node sends one
// every half of it, but only after a liveness probe succeeded: a new
// connection through its own socket and a SysPing on it, each bounded by
// half the period. That exercises the accept loop, the handshake (the
// node's lock, its connection table), a connection's pump and the system
// service: a node wedged in any of them misses its pings and is
// restarted. A probe the policy refuses (policy.connect without the
// node's uid) still proves the node answers, and counts as alive.

// watchdogInterval returns how often to ping: half of $WATCHDOG_USEC, or 0
// when systemd asks for no watchdog or asks another process
// ($WATCHDOG_PID). Like sd_watchdog_enabled(1, …), it unsets both, so
// that no child inherits them.
func watchdogInterval() (time.Duration, error) {
	usec, pid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	os.Unsetenv("WATCHDOG_USEC")
	os.Unsetenv("WATCHDOG_PID")
	if usec == "" {
		return 0, nil
	}
	if pid != "" {
		if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
			return 0, nil
		}
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("systemd: WATCHDOG_USEC=%q is not a positive count of microseconds", usec)
	}
	return time.Duration(n) * time.Microsecond / 2, nil
}

// watchdog pings systemd while the probe succeeds. Its goroutine is owned
// by serve, which stops it (stop waits for it) before STOPPING=1.
type watchdog struct {
	quit chan struct{}
	done chan struct{}
}

// startWatchdog probes every interval, each probe bounded by half of it,
// and sends WATCHDOG=1 after each success.
func startWatchdog(interval time.Duration, probe func(context.Context) error, sd *notifier, log *slog.Logger) *watchdog {
	w := &watchdog{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), interval/2)
			err := probe(ctx)
			cancel()
			switch {
			case err != nil && !failing:
				failing = true
				log.Error("watchdog: the node does not answer its own probe; not pinging systemd", slog.String("error", err.Error()))
			case err == nil && failing:
				failing = false
				log.Warn("watchdog: the node answers again; pinging systemd")
			}
			if err == nil {
				notifyOrLog(log, sd, "WATCHDOG=1")
			}
		}
	}()
	return w
}

func (w *watchdog) stop() {
	close(w.quit)
	<-w.done
}

// probeNode connects to the node's socket and pings it.
func probeNode(socket string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("systemd-watchdog"),
			switchboard.WithRings(switchboard.MinRingSize, switchboard.MinRingSize, switchboard.MinRingSize))
		if errors.Is(err, switchboard.ErrRefused) {
			return nil // the node answered: the policy keeps its own uid out
		}
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil)
		return err
	}
}
