package switchboard

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
)

// TestEventDeliveryAllocs counts the allocations of delivering 64-byte
// events, node and client together (one process), the client taking them
// with RecvEvents (which allocates none: TestRecvEventsAllocs). Measured
// when written: one per event through the connection actor's mailbox
// (Session.SendEvent, Node.SendEvent: the *Delivery message the actor
// gets), and one from a handler (Request.SendEvent: the *Delivery the
// pump's queueEvent takes, whether it is queued or not).
func TestEventDeliveryAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	const batch = 64
	const perEvent = 1              // the *Delivery; see above
	sessc := make(chan *Session, 1) // a channel: the race detector cannot see the ring's order
	n := startNode(t)
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) { sessc <- r.Session; return nil, nil })
	payload := make([]byte, 64)
	n.HandleFunc(2, func(ctx context.Context, r *Request) ([]byte, error) {
		for range batch {
			r.SendEvent(3, payload)
		}
		return nil, nil
	})
	c := dial(t, n)
	ctx := ctx5(t)
	if _, err := c.Call(ctx, 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	sess := <-sessc
	evs := make([]Event, batch)
	recvAll := func() {
		for got := 0; got < batch; {
			k, err := c.RecvEvents(ctx, evs)
			if err != nil {
				t.Fatal(err)
			}
			got += k
		}
	}
	viaMailbox := func() {
		for range batch {
			sess.SendEvent(3, payload)
		}
		recvAll()
	}
	fromHandler := func() { // one Send and its handler's run per batch, too
		if err := c.Send(ctx, 2, 0, nil); err != nil {
			t.Fatal(err)
		}
		recvAll()
	}
	viaMailbox()
	fromHandler()
	const slack = 8 // per batch: a request's handling, the runtime's own
	if a := testing.AllocsPerRun(50, viaMailbox); a > perEvent*batch+slack {
		t.Errorf("through the mailbox: %v allocations per %d events", a, batch)
	} else {
		t.Logf("through the mailbox: %v allocations per %d events", a, batch)
	}
	if a := testing.AllocsPerRun(50, fromHandler); a > perEvent*batch+slack {
		t.Errorf("from a handler: %v allocations per %d events", a, batch)
	} else {
		t.Logf("from a handler: %v allocations per %d events", a, batch)
	}
}

// TestEventHandlerAllocs counts the allocations of 64-byte events taken by
// an event handler, node and client together: the node's *Delivery (see
// TestEventDeliveryAllocs) and the payload's copy, which the handler may
// keep. Before, the Event given to the handler was copied to the heap too
// (dispatch sent its address to the event actor on the other branch).
func TestEventHandlerAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	const batch = 64
	const perEvent = 2 // the node's *Delivery, the payload's copy
	var got atomic.Int64
	sessc := make(chan *Session, 1)
	n := startNode(t)
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) { sessc <- r.Session; return nil, nil })
	c := dial(t, n, WithEventHandler(func(e Event) { got.Add(1) }))
	ctx := ctx5(t)
	if _, err := c.Call(ctx, 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	sess := <-sessc
	payload := make([]byte, 64)
	want := int64(0)
	round := func() {
		for range batch {
			sess.SendEvent(3, payload)
		}
		want += batch
		for got.Load() < want {
			runtime.Gosched()
		}
	}
	round()
	const slack = 8 // per batch: the runtime's own, the pumps' wake-ups
	if a := testing.AllocsPerRun(50, round); a > perEvent*batch+slack {
		t.Errorf("%v allocations per %d events", a, batch)
	} else {
		t.Logf("%v allocations per %d events", a, batch)
	}
}
