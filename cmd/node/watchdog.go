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
// connection through its own socket and a SysPing on it, all within half
// the period. That exercises the accept loop, the handshake (the node's
// lock, its connection table), the pump of that fresh connection and the
// system service; not the pumps of the other connections, each of which
// runs on its own. A node wedged in any of those misses its pings and is
// restarted.
//
// A probe the node refuses in its handshake, with a code (policy.connect
// without the node's uid; the privileged limits full of root's or the
// node's uid's own clients; out of file descriptors), still proves that
// the accept loop and the handshake answer, and counts as alive: a busy
// node is not a wedged one, and a restart would drop every client.

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
// and pings (WATCHDOG=1) after each one that shows the node alive
// (probeOnce).
func startWatchdog(interval time.Duration, probe func(context.Context) error, ping func(), log *slog.Logger) *watchdog {
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
			err := probeOnce(probe, interval/2)
			switch {
			case err != nil && !failing:
				failing = true
				log.Error("watchdog: the node does not answer its own probe; not pinging systemd", slog.String("error", err.Error()))
			case err == nil && failing:
				failing = false
				log.Warn("watchdog: the node answers again; pinging systemd")
			}
			if err == nil {
				ping()
			}
		}
	}()
	return w
}

func (w *watchdog) stop() {
	close(w.quit)
	<-w.done
}

// probeOnce runs probe within timeout and returns nil when it shows the
// node alive: it succeeded in time, or the node refused the connection
// with a code (refusedByNode). A probe that outlives its timeout fails,
// whatever it returns at last.
func probeOnce(probe func(context.Context) error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := probe(ctx)
	if took := time.Since(start); took > timeout {
		return fmt.Errorf("the probe took %v, more than %v (%v)", took.Round(time.Millisecond), timeout, err)
	}
	if err != nil && refusedByNode(err) {
		return nil
	}
	return err
}

// refusedByNode reports whether err is the node's answer with a code:
// a refusal in the handshake (any code: refused, limit exceeded, out of
// descriptors) or an error code for the SysPing. Either way the accept
// loop took the connection and the node answered. A dial error (no
// socket, connection refused), a timeout, the node closing without a
// word (ErrNodeGone) or a node of another uid (ErrNotAuthentic, found by
// this end) is not.
func refusedByNode(err error) bool {
	var e *switchboard.Error
	return errors.As(err, &e) && e.Code != switchboard.CodeNodeGone && e.Code != switchboard.CodeNotAuthentic
}

// probeNode connects to the node's socket and pings it.
func probeNode(socket string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("systemd-watchdog"),
			switchboard.WithRings(switchboard.MinRingSize, switchboard.MinRingSize, switchboard.MinRingSize))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil)
		return err
	}
}
