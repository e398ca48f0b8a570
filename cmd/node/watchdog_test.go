package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// TestProbeOnce: the watchdog's decision. A probe that succeeds in time,
// or that the node refuses with a code (the accept loop and the handshake
// answered), shows the node alive; one that fails to connect, times out,
// finds the node gone, or outlives its deadline whatever it returns, does
// not.
func TestProbeOnce(t *testing.T) {
	const timeout = 50 * time.Millisecond
	returns := func(err error) func(context.Context) error {
		return func(context.Context) error { return err }
	}
	late := func(err error) func(context.Context) error {
		return func(context.Context) error { time.Sleep(2 * timeout); return err }
	}
	for _, tc := range []struct {
		name  string
		probe func(context.Context) error
		alive bool
	}{
		{"ok", returns(nil), true},
		{"limit exceeded", returns(&switchboard.Error{Code: switchboard.CodeLimitExceeded, Reason: "uid 0 has 64 handshakes in progress"}), true},
		{"out of descriptors", returns(&switchboard.Error{Code: switchboard.CodeRefused, Reason: "node out of file descriptors: try again later"}), true},
		{"policy", returns(switchboard.ErrRefused), true},
		{"ping refused", returns(fmt.Errorf("call: %w", &switchboard.Error{Code: switchboard.CodeRefused})), true},
		{"connection refused", returns(fmt.Errorf("switchboard: dial /x: %w", syscall.ECONNREFUSED)), false},
		{"no socket", returns(fmt.Errorf("switchboard: dial /x: %w", syscall.ENOENT)), false},
		{"timeout", returns(fmt.Errorf("switchboard: handshake: %w", context.DeadlineExceeded)), false},
		{"closed in the handshake", returns(fmt.Errorf("switchboard: node closed the connection during the handshake: %w", switchboard.ErrNodeGone)), false},
		{"another uid", returns(&switchboard.Error{Code: switchboard.CodeNotAuthentic}), false},
		{"late success", late(nil), false},
		{"late refusal", late(switchboard.ErrLimitExceeded), false},
		{"blocks past the deadline", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, false},
	} {
		err := probeOnce(tc.probe, timeout)
		if (err == nil) != tc.alive {
			t.Errorf("%s: probeOnce = %v, want alive %v", tc.name, err, tc.alive)
		}
	}
}

// TestWatchdogPings: the loop pings after each probe the node answered, a
// refusal included, and never after a probe that failed or hung.
func TestWatchdogPings(t *testing.T) {
	const interval = 20 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(probe func(context.Context) error, d time.Duration) int {
		pings := make(chan struct{}, 1000)
		w := startWatchdog(interval, probe, func() { pings <- struct{}{} }, log)
		time.Sleep(d)
		w.stop()
		return len(pings)
	}
	if n := run(func(context.Context) error { return switchboard.ErrLimitExceeded }, 300*time.Millisecond); n < 3 {
		t.Errorf("%d pings in 300ms while the node refuses the probe with limit exceeded, want about 15", n)
	}
	if n := run(func(ctx context.Context) error { time.Sleep(interval); return nil }, 300*time.Millisecond); n != 0 {
		t.Errorf("%d pings while the probe outlives its deadline", n)
	}
	if n := run(func(context.Context) error { return fmt.Errorf("dial: %w", syscall.ECONNREFUSED) }, 300*time.Millisecond); n != 0 {
		t.Errorf("%d pings while the socket refuses connections", n)
	}
	if n := run(func(context.Context) error { return errors.New("i/o timeout") }, 300*time.Millisecond); n != 0 {
		t.Errorf("%d pings while the probe times out", n)
	}
}
