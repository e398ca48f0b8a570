package switchboard

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestBusRequestHandler(t *testing.T) { bothTransports(t, testBusRequestHandler) }

func testBusRequestHandler(t *testing.T, tr Transport) {
	n := startNode(t)
	srv := dial(t, n, WithTransport(tr), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "fail" {
			return nil, errors.New("no way")
		}
		return append([]byte("re:"), r.Payload...), nil
	}))
	cl := dial(t, n, WithTransport(tr))
	ctx := ctx5(t)
	if primary, _, err := srv.Own(ctx, "svc.kv"); err != nil || !primary {
		t.Fatalf("own: %v %v", primary, err)
	}
	for i := range 100 {
		r, err := cl.Request(ctx, "svc.kv", []byte(fmt.Sprint(i)))
		if err != nil || string(r) != fmt.Sprintf("re:%d", i) {
			t.Fatalf("request %d: %q %v", i, r, err)
		}
	}
	if _, err := cl.Request(ctx, srv.Address(), []byte("fail")); !errors.Is(err, ErrHandler) || !contains(err.Error(), "no way") {
		t.Fatalf("failing handler: %v", err)
	}
	names, err := cl.Names(ctx)
	if err != nil || len(names) != 1 || names[0].Owner != srv.Address() {
		t.Fatalf("names %+v %v", names, err)
	}
}

func TestBusPeerGone(t *testing.T) {
	n := startNode(t)
	started := make(chan struct{})
	srv := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	cl := dial(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		<-started
		srv.Close()
	}()
	t0 := time.Now()
	_, err := cl.Request(ctx, srv.Address(), nil)
	if !errors.Is(err, ErrPeerGone) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("peer gone took %v", d)
	}
}

// TestBusRequestToFullPeer: a request the peer's queue cannot take fails
// at once with ErrUndeliverable; it is never dropped silently.
func TestBusRequestToFullPeer(t *testing.T) {
	n := startNode(t, WithEventQueue(16), WithEventQueueBytes(1<<20), WithOverflow(DropOldest))
	ctx := ctx5(t)
	full := dial(t, n, WithRings(0, 0, 4096), WithEventQueue(1)) // reads nothing
	a := dial(t, n)
	waitFor(t, func() bool { // fill its ring, and its queue in the node
		for i := range 20 {
			if err := a.SendTo(ctx, full.Address(), []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Millisecond)
		for _, ci := range n.Connections() {
			if ci.Address == full.Address() && ci.EventFill > 4096-64 && ci.EventsQueued >= 8 {
				return true
			}
		}
		return false
	})
	nctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.Request(nctx, full.Address(), []byte("q"))
		done <- err
	}()
	// The request waits in the peer's full queue; more messages push it out.
	other := dial(t, n)
	for i := 0; ; i++ {
		select {
		case err := <-done:
			if !errors.Is(err, ErrUndeliverable) {
				t.Fatalf("request pushed out of a full peer's queue: %v", err)
			}
			if p := a.FlowControl().InFlight; p != 0 {
				t.Fatalf("%d calls still in flight", p)
			}
			return
		default:
		}
		if i > 1000000 {
			for _, ci := range n.Connections() {
				t.Logf("%s events %d dropped %d queued %d ring %d pending %d", ci.Address, ci.Events, ci.Dropped, ci.EventsQueued, ci.EventFill, ci.Pending)
			}
			t.Fatal("the request never failed")
		}
		if i%1000 == 999 {
			time.Sleep(time.Millisecond)
		}
		if err := other.SendTo(ctx, full.Address(), []byte("push")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBusPeerCannotPoseAsNode: a peer's reply cannot carry the node's
// codes.
func TestBusPeerCannotPoseAsNode(t *testing.T) {
	n := startNode(t)
	srv := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		return nil, ErrNodeGone
	}))
	c := dial(t, n)
	_, err := c.Request(ctx5(t), srv.Address(), nil)
	if errors.Is(err, ErrNodeGone) || !errors.Is(err, ErrHandler) {
		t.Fatalf("got %v", err)
	}
}

// TestBusInlineRequests: a handler run on the connection's own reading
// goroutine answers requests, and may itself call and request on the same
// connection (its callers read their replies while the handler holds the
// reader).
func TestBusInlineRequests(t *testing.T) {
	n := startNode(t)
	echoService(n)
	helper := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		return append([]byte("helper:"), r.Payload...), nil
	}))
	var srv *Conn
	ready := make(chan struct{})
	srv = dial(t, n, WithInlineRequests(), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		<-ready
		if string(r.Payload) == "nested" {
			c, err := srv.Call(ctx, svcEcho, cmdEcho, []byte("call"))
			if err != nil {
				return nil, err
			}
			p, err := srv.Request(ctx, helper.Address(), []byte("req"))
			if err != nil {
				return nil, err
			}
			return append(append(c, ' '), p...), nil
		}
		return r.Payload, nil
	}))
	close(ready)
	c := dial(t, n)
	ctx := ctx5(t)
	for i := range 50 {
		r, err := c.Request(ctx, srv.Address(), []byte(fmt.Sprint(i)))
		if err != nil || string(r) != fmt.Sprint(i) {
			t.Fatalf("%d: %q %v", i, r, err)
		}
	}
	r, err := c.Request(ctx, srv.Address(), []byte("nested"))
	if err != nil || string(r) != "call helper:req" {
		t.Fatalf("nested: %q %v", r, err)
	}
}

// TestBusRequestDroppedBySocketClient: with the socket transport a client
// that does not read drops the oldest events in its own buffer (or the
// node's queue for it fills); a request among them is answered with an
// error as it is dropped.
func TestBusRequestDroppedBySocketClient(t *testing.T) {
	n := startNode(t, WithEventQueue(16), WithEventQueueBytes(1<<20), WithOverflow(DropOldest))
	ctx := ctx5(t)
	full := dial(t, n, WithTransport(TransportSocket), WithRings(0, 0, 4096), WithEventQueue(1)) // reads nothing
	a := dial(t, n)
	done := make(chan error, 1)
	go func() {
		_, err := a.Request(ctx, full.Address(), []byte("q"))
		done <- err
	}()
	for i := 0; ; i++ {
		select {
		case err := <-done:
			// Dropped by the client's buffer ("request dropped"), or by the
			// node's queue if that filled first: either way at once, not
			// at the deadline.
			if !(errors.Is(err, ErrHandler) && contains(err.Error(), "request dropped")) && !errors.Is(err, ErrUndeliverable) {
				t.Fatalf("request to a client that does not read: %v", err)
			}
			return
		default:
		}
		if i > 2000000 {
			t.Fatal("the request was never answered")
		}
		if err := a.SendTo(ctx, full.Address(), []byte("push")); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestBusRequestDroppedInClientBuffer: the same with a node queue deep
// enough that only the client's own buffer overflows. The pushes start
// once the request waits at the node (else, on a loaded machine, they
// could fill the node's queue before the request came, and it would be
// refused there instead).
func TestBusRequestDroppedInClientBuffer(t *testing.T) {
	n := startNode(t, WithEventQueue(100000), WithEventQueueBytes(64<<20), WithOverflow(DropOldest))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := dial(t, n, WithTransport(TransportSocket), WithRings(0, 0, 4096), WithEventQueue(1))
	a := dial(t, n)
	done := make(chan error, 1)
	go func() {
		_, err := a.Request(ctx, full.Address(), []byte("q"))
		done <- err
	}()
	waitFor(t, func() bool {
		for _, ci := range n.Connections() {
			if ci.Address == a.Address() && ci.Pending == 1 {
				return true
			}
		}
		return false
	})
	for i := 0; ; i++ {
		select {
		case err := <-done:
			if !errors.Is(err, ErrHandler) || !contains(err.Error(), "request dropped") {
				t.Fatalf("request dropped by the client: %v", err)
			}
			return
		default:
		}
		if i > 5000000 {
			t.Fatal("the request was never answered")
		}
		if err := a.SendTo(ctx, full.Address(), []byte("push")); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			time.Sleep(100 * time.Microsecond)
		}
	}
}
