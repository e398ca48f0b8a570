package tests

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// TestDirectPeerProcesses: between two processes, requests go over the
// direct channel the node (a third process) brokers, and a responder
// killed with SIGKILL mid-request fails the caller with ErrPeerGone at
// once.
func TestDirectPeerProcesses(t *testing.T) {
	_, socket := nodeChild(t)
	_, echoAddr := startPeer(t, "peer", socket, "SB_MODE=echo", "SB_DIRECT=1")
	hang, hangAddr := startPeer(t, "peer", socket, "SB_MODE=hang", "SB_DIRECT=1")
	c := dialT(t, socket, switchboard.WithDirectPeers(true))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for c.DirectStats().Opened == 0 {
		if ctx.Err() != nil {
			t.Fatalf("no channel: %+v", c.DirectStats())
		}
		if r, err := c.Request(ctx, echoAddr, []byte("w")); err != nil || string(r) != echoAddr+":w" {
			t.Fatalf("warm-up: %q %v", r, err)
		}
		time.Sleep(time.Millisecond)
	}
	before := c.DirectStats().Requests
	for range 100 {
		if r, err := c.Request(ctx, echoAddr, []byte("x")); err != nil || string(r) != echoAddr+":x" {
			t.Fatalf("%q %v", r, err)
		}
	}
	if got := c.DirectStats().Requests - before; got != 100 {
		t.Fatalf("%d of 100 requests went direct", got)
	}
	// The hanging peer: a first request (it times out) sets the channel up.
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	c.Request(short, hangAddr, nil)
	stop()
	checkFor(t, 10*time.Second, func() error {
		if c.DirectStats().Opened < 2 {
			return errors.New("no channel to the hanging peer yet")
		}
		return nil
	})
	before = c.DirectStats().Requests
	done := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, hangAddr, []byte("y"))
		done <- err
	}()
	checkFor(t, 10*time.Second, func() error {
		if strings.Count(hang.stdout.String(), "request") < 2 {
			return errors.New("request not delivered yet")
		}
		return nil
	})
	killed := time.Now()
	kill9(hang)
	if err := <-done; !errors.Is(err, switchboard.ErrPeerGone) {
		t.Fatalf("request to a killed peer: %v", err)
	}
	if d := time.Since(killed); d > 5*time.Second {
		t.Fatalf("peer gone noticed after %v", d)
	}
	if c.DirectStats().Requests != before+1 {
		t.Fatal("the request to the killed peer did not go direct")
	}
}
