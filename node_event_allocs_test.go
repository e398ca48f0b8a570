package switchboard

import (
	"context"
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
