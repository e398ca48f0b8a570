package switchboard

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDirectMarkerLost: B's event queue drops the start marker (B is not
// reading and a third client floods it, after the node's check at
// DirectStart). A's requests do not wait for their deadline: the channel
// ends (counted) and they fail at once or go routed.
func TestDirectMarkerLost(t *testing.T) {
	n := startNode(t, WithEventQueue(4))
	gate := make(chan struct{})
	srv := dial(t, n, WithDirectPeers(true), WithEventQueue(1), WithRings(0, 0, MinRingSize),
		WithEventHandler(func(Event) { <-gate }),
		WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return r.Payload, nil }))
	cl := dial(t, n, WithDirectPeers(true))
	flood := dial(t, n)
	ctx := ctx5(t)
	released := false
	release := func() {
		if !released {
			released = true
			close(gate)
		}
	}
	defer release()
	// B stops reading: its event handler waits, its own queue holds one
	// event, its event ring and the node's queue for it fill.
	deadline := time.Now().Add(5 * time.Second)
	droppedForB := func() uint64 {
		for _, ci := range n.Connections() {
			if ci.Address == srv.Address() {
				return ci.Dropped
			}
		}
		return 0
	}
	for droppedForB() == 0 { // B's event ring and the node's queue for it are full
		if time.Now().After(deadline) {
			t.Fatalf("B's queue does not fill: %+v", n.Stats())
		}
		if err := flood.SendTo(ctx, srv.Address(), make([]byte, MinRingSize/4)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	// A's first request is routed and opens the channel; the marker joins
	// B's full queue, and the flood pushes it out.
	first := make(chan error, 1)
	go func() { _, err := cl.Request(ctx, srv.Address(), []byte("first")); first <- err }()
	for cl.DirectStats().Opened+cl.DirectStats().Refused == 0 && n.Stats().DirectMarkersLost == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no channel: %+v %+v", cl.DirectStats(), n.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	for n.Stats().DirectMarkersLost != 1 { // the flood pushes the marker out of B's queue
		if time.Now().After(deadline) {
			t.Fatalf("the marker was not lost: %+v %+v", n.Stats(), cl.DirectStats())
		}
		flood.SendTo(ctx, srv.Address(), make([]byte, MinRingSize/4))
		time.Sleep(time.Millisecond)
	}
	release()
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	for i := range 20 {
		_, err := cl.Request(rctx, srv.Address(), []byte("after"))
		if err != nil && !errors.Is(err, ErrUndeliverable) {
			t.Fatalf("request %d after the lost marker: %v; %+v; %+v; %+v", i, err, cl.DirectStats(), srv.DirectStats(), n.Stats())
		}
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("requests after the lost marker took %v: they waited for their deadline", d)
	}
	<-first
}

// TestDirectStalledPeer: a responder that stops reading fills the
// channel's request ring and A's writer waits for room; a path switch to
// another peer meanwhile must not hold up A's requests to a third.
func TestDirectStalledPeer(t *testing.T) {
	n := startNode(t)
	gate := make(chan struct{})
	defer close(gate)
	srv := dial(t, n, WithDirectPeers(true), WithEventQueue(1),
		WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
			if string(r.Payload) != "warm" {
				<-gate
			}
			return nil, nil
		}))
	echo := func(ctx context.Context, r *PeerRequest) ([]byte, error) { return r.Payload, nil }
	other := dial(t, n, WithDirectPeers(true), WithRequestHandler(echo)) // A switches to it meanwhile
	third := dial(t, n, WithRequestHandler(echo))                        // routed
	cl := dial(t, n, WithDirectPeers(true))
	goDirect(t, cl, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := make([]byte, 32<<10)
	for range 2 * DirectRingBytes / len(big) { // more than the ring holds: the last writers wait for room
		go cl.Request(ctx, srv.Address(), big)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := cl.Request(ctx, other.Address(), []byte("x")); err != nil { // routed; starts the switch to other
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the switch waits for the path lock
	done := make(chan error, 1)
	go func() {
		_, err := cl.Request(ctx, third.Address(), []byte("y"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a request to a third peer waits behind the stalled channel")
	}
}
