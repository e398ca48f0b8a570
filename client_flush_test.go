package switchboard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFlush: after Flush, the node has routed every publication: a
// subscriber's queue holds them all, on both transports.
func TestFlush(t *testing.T) {
	for _, tr := range []Transport{TransportSHM, TransportSocket} {
		t.Run(tr.String(), func(t *testing.T) {
			n := startNode(t, WithEventQueue(10000))
			sub := dial(t, n, WithEventQueue(10000))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := sub.Subscribe(ctx, "g"); err != nil {
				t.Fatal(err)
			}
			pub := dial(t, n, WithTransport(tr))
			const count = 3000
			for i := range count {
				if err := pub.Publish(ctx, "g", []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := pub.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if fc := pub.FlowControl(); fc.Accepted != count {
				t.Fatalf("accepted %d, want %d", fc.Accepted, count)
			}
			for i := range count {
				e, err := sub.RecvEvent(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if string(e.Payload) != fmt.Sprint(i) {
					t.Fatalf("event %d: %q", i, e.Payload)
				}
			}
			if err := pub.Close(); err != nil {
				t.Fatal(err)
			}
			if err := pub.Flush(ctx); !errors.Is(err, ErrClosed) {
				t.Fatalf("Flush after Close: %v", err)
			}
		})
	}
}

// TestFlushCountsUnsent: while the node's pump is held by a handler,
// Flush and Close give up after their time and count every message the
// node did not take.
func TestFlushCountsUnsent(t *testing.T) {
	for _, tr := range []Transport{TransportSHM, TransportSocket} {
		t.Run(tr.String(), func(t *testing.T) {
			n := startNode(t)
			release := make(chan struct{})
			t.Cleanup(func() { close(release) }) // before the node's Close
			n.HandleFunc(40, func(ctx context.Context, r *Request) ([]byte, error) {
				<-release
				return nil, nil
			})
			c := dial(t, n, WithTransport(tr), WithCloseTimeout(50*time.Millisecond))
			ctx := context.Background()
			if err := c.Send(ctx, 40, 1, nil); err != nil { // holds the pump
				t.Fatal(err)
			}
			for range 10 {
				if err := c.Publish(ctx, "nobody", []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			fctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			err := c.Flush(fctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Flush: %v", err)
			}
			cerr := c.Close()
			var ue *UnsentError
			if tr == TransportSocket {
				// Written to the socket: handed over; the node reads them
				// once its pump is free, goodbye or not.
				if cerr != nil {
					t.Fatalf("Close: %v", cerr)
				}
				return
			}
			// The batch holding the send is not released either: 11.
			if !errors.As(err, &ue) || ue.Unsent != 11 {
				t.Fatalf("Flush: %v, want 11 unsent", err)
			}
			if !errors.As(cerr, &ue) || ue.Unsent != 11 || !errors.Is(cerr, ErrUnsent) || !errors.Is(cerr, context.DeadlineExceeded) {
				t.Fatalf("Close: %v, want 11 unsent after the deadline", cerr)
			}
			if fc := c.FlowControl(); fc.Unsent != 11 || fc.Accepted != 11 {
				t.Fatalf("FlowControl: %+v", fc)
			}
			if err := c.Close(); err != cerr {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

// TestDrain: a subscriber drains while a publisher publishes: every event
// it received was handed to its handler before Drain returned, none after,
// none dropped; in RecvEvent mode, every one was taken by the receiver.
func TestDrain(t *testing.T) {
	for _, mode := range []string{"handler", "recv"} {
		t.Run(mode, func(t *testing.T) {
			n := startNode(t, WithEventQueue(100000))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var handled atomic.Int64
			var last atomic.Int64
			last.Store(-1)
			var disorder atomic.Int64
			take := func(e Event) {
				var i int64
				fmt.Sscan(string(e.Payload), &i)
				if prev := last.Swap(i); prev >= 0 && i != prev+1 {
					disorder.Add(1)
				}
				handled.Add(1)
			}
			var opts []DialOption
			if mode == "handler" {
				opts = append(opts, WithEventHandler(take))
			}
			sub, err := Dial(ctx, append(opts, WithSocket(n.SocketPath()), WithEventQueue(100000))...)
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.Subscribe(ctx, "g"); err != nil {
				t.Fatal(err)
			}
			var recv sync.WaitGroup
			if mode == "recv" {
				recv.Go(func() {
					for {
						e, err := sub.RecvEvent(ctx)
						if err != nil {
							return
						}
						take(e)
					}
				})
			}
			pub := dial(t, n)
			stop := make(chan struct{})
			var pubs sync.WaitGroup
			pubs.Go(func() {
				// Fewer than the event queues hold (100,000): a publisher
				// faster than the subscriber would otherwise fill them, and
				// the node would drop (and count) what it could not queue,
				// which is not what this test is about.
				for i := 0; i < 90000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if err := pub.Publish(ctx, "g", []byte(fmt.Sprint(i))); err != nil {
						t.Error(err)
						return
					}
				}
			})
			for handled.Load() < 2000 {
				if ctx.Err() != nil {
					t.Fatalf("only %d events handled", handled.Load())
				}
				time.Sleep(time.Millisecond)
			}
			if err := sub.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			// In recv mode the receiver counts an event after RecvEvent
			// returned it: wait for it to see the end (RecvEvent fails
			// once the connection is closed and its queue was taken).
			recv.Wait()
			got, fc := handled.Load(), sub.FlowControl()
			close(stop)
			pubs.Wait()
			if err := pub.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			if after := handled.Load(); after != got {
				t.Fatalf("handled %d events after Drain returned", after-got)
			}
			if uint64(got) != fc.EventsTotal-uint64(fc.EventsWaiting) || fc.EventsDropped != 0 || disorder.Load() != 0 {
				t.Fatalf("handled %d; %+v; disorder %d", got, fc, disorder.Load())
			}
			t.Logf("handled %d, %d left waiting", got, fc.EventsWaiting)
		})
	}
}

// In the pull modes, Drain waits for the events that came before its
// marker to be taken, not for the queue to be empty: messages that keep
// arriving after it do not hold it up.
func TestDrainPullWaitsForItsMarkerOnly(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := dial(t, n)
	peer := dial(t, n)
	for i := range 3 {
		if err := peer.SendTo(ctx, c.Address(), fmt.Appendf(nil, "before %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return c.FlowControl().EventsWaiting == 3 })
	drained := make(chan error, 1)
	go func() { drained <- c.Drain(ctx) }()
	var m *drainMark
	waitFor(t, func() bool { m = c.flush.mark.Load(); return m != nil })
	<-m.seen // the marker is behind the three
	for i := range 5 {
		if err := peer.SendTo(ctx, c.Address(), fmt.Appendf(nil, "after %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return c.FlowControl().EventsWaiting == 8 })
	for i := range 3 {
		e, err := c.RecvEvent(ctx)
		if err != nil || string(e.Payload) != fmt.Sprintf("before %d", i) {
			t.Fatalf("event %d: %q %v", i, e.Payload, err)
		}
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(10 * time.Second): // a failure bound: Drain waited for the events after its marker
		t.Fatal("Drain waits for events that came after its marker")
	}
}
