package switchboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// emitter returns a node whose service 1 sends, for a call with payload
// "N", N events of command 0, 1, … and payload the number in decimal,
// and the connection to it.
func emitter(t *testing.T, opts []NodeOption, dopts ...DialOption) (*Node, *Conn) {
	n := startNode(t, opts...)
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
		var count int
		fmt.Sscan(string(r.Payload), &count)
		for i := range count {
			r.SendEvent(uint16(i), []byte(fmt.Sprint(i)))
		}
		return nil, nil
	})
	return n, dial(t, n, dopts...)
}

// TestRecvEventsMixedOrder: events taken by RecvEvents in batches of
// every size, RecvEvent, TryRecvEvent and RecvEventView, in turn, come in
// the node's order, none lost, none twice.
func TestRecvEventsMixedOrder(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		const count = 20000
		_, c := emitter(t, nil, WithTransport(tr), WithSpin(100*time.Microsecond))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.Send(ctx, 1, 0, []byte(fmt.Sprint(count))); err != nil {
			t.Fatal(err)
		}
		next := 0
		check := func(e Event) {
			t.Helper()
			if e.Command != uint16(next) || string(e.Payload) != fmt.Sprint(next) || e.Seq != uint64(next+1) {
				t.Fatalf("event %d: command %d, payload %q, seq %d", next, e.Command, e.Payload, e.Seq)
			}
			next++
		}
		evs := make([]Event, 64)
		for round := 0; next < count; round++ {
			switch round % 5 {
			case 0, 1:
				k, err := c.RecvEvents(ctx, evs[:1+round%len(evs)])
				if err != nil {
					t.Fatalf("after %d: %v", next, err)
				}
				for _, e := range evs[:k] {
					check(e)
				}
			case 2:
				e, err := c.RecvEvent(ctx)
				if err != nil {
					t.Fatalf("after %d: %v", next, err)
				}
				check(e)
				e.Release()
			case 3:
				if e, ok := c.TryRecvEvent(); ok {
					check(e)
				}
			case 4:
				e, err := c.RecvEventView(ctx)
				if err != nil {
					t.Fatalf("after %d: %v", next, err)
				}
				check(e)
				e.Release()
			}
		}
		if fc := c.FlowControl(); fc.EventsTotal != count || fc.EventsDropped != 0 {
			t.Fatalf("flow control %+v", fc)
		}
	})
}

// TestRecvEventsPayloadBuffers: RecvEvents copies each payload into the
// buffer its slot holds, so the caller's buffers are reused.
func TestRecvEventsPayloadBuffers(t *testing.T) {
	_, c := emitter(t, nil)
	ctx := ctx5(t)
	if err := c.Send(ctx, 1, 0, []byte("2")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 100)
	evs := []Event{{Payload: buf}}
	for i := range 2 {
		if k, err := c.RecvEvents(ctx, evs); err != nil || k != 1 {
			t.Fatal(k, err)
		}
		if string(evs[0].Payload) != fmt.Sprint(i) || &evs[0].Payload[:1][0] != &buf[:1][0] {
			t.Fatalf("event %d: payload %q not in the caller's buffer", i, evs[0].Payload)
		}
		evs[0].Release() // does nothing: the buffer stays the caller's
	}
}

// TestRecvEventsChunked: events larger than the event ring arrive whole
// and in order among small ones.
func TestRecvEventsChunked(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t, WithRings(1<<20, 1<<20, 4096))
		big := make([]byte, 20000)
		for i := range big {
			big[i] = byte(i * 7)
		}
		want := [][]byte{[]byte("a"), big, []byte("b"), big, big, []byte("c")}
		n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
			for i, p := range want {
				r.SendEvent(uint16(i), p)
			}
			return nil, nil
		})
		c := dial(t, n, WithTransport(tr))
		ctx := ctx5(t)
		if err := c.Send(ctx, 1, 0, nil); err != nil {
			t.Fatal(err)
		}
		evs := make([]Event, 4)
		for got := 0; got < len(want); {
			k, err := c.RecvEvents(ctx, evs)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs[:k] {
				if e.Command != uint16(got) || !bytes.Equal(e.Payload, want[got]) {
					t.Fatalf("event %d: command %d, %d bytes", got, e.Command, len(e.Payload))
				}
				got++
			}
		}
	})
}

// TestRecvEventsCancel: a RecvEvents with nothing to read returns ctx's
// error; an event sent later, after the receiver slept, still wakes the
// next one.
func TestRecvEventsCancel(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		_, c := emitter(t, nil, WithTransport(tr))
		evs := make([]Event, 8)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if k, err := c.RecvEvents(ctx, evs); !errors.Is(err, context.DeadlineExceeded) || k != 0 {
			t.Fatalf("%d events, %v", k, err)
		}
		ctx = ctx5(t)
		got := make(chan error, 1)
		go func() {
			k, err := c.RecvEvents(ctx, evs)
			if err == nil && (k != 1 || string(evs[0].Payload) != "0") {
				err = fmt.Errorf("%d events, first %q", k, evs[0].Payload)
			}
			got <- err
		}()
		time.Sleep(20 * time.Millisecond) // asleep by now
		if err := c.Send(ctx, 1, 0, []byte("1")); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	})
}

// TestRecvEventsClose: Close ends a RecvEvents waiting for events.
func TestRecvEventsClose(t *testing.T) {
	_, c := emitter(t, nil)
	got := make(chan error, 1)
	go func() {
		_, err := c.RecvEvents(context.Background(), make([]Event, 8))
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-got:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RecvEvents still waits after Close")
	}
}

// TestRecvEventsBus: bus messages and notices come through RecvEvents,
// decoded, in order with plain events.
func TestRecvEventsBus(t *testing.T) {
	n, b := emitter(t, nil)
	ctx := ctx5(t)
	if err := b.Subscribe(ctx, GroupConnections); err != nil {
		t.Fatal(err)
	}
	a := dial(t, n)
	if err := a.SendTo(ctx, b.Address(), []byte("hi"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Call(ctx, 1, 0, []byte("1")); err != nil {
		t.Fatal(err)
	}
	var got []Event
	evs := make([]Event, 8)
	for len(got) < 3 {
		k, err := b.RecvEvents(ctx, evs)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs[:k] {
			e.Payload = bytes.Clone(e.Payload)
			got = append(got, e)
		}
	}
	// In the node's order (its sequence numbers), each decoded.
	var notice, message, event bool
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d: seq %d", i, e.Seq)
		}
		switch nt, err := e.Notice(); {
		case err == nil:
			notice = nt.Kind == NoticeConnected && nt.Member.Address == a.Address()
		case e.Kind == EventMessage:
			message = e.From == a.Address() && string(e.Payload) == "hi"
		default:
			event = e.Service == 1 && string(e.Payload) == "0"
		}
	}
	if !notice || !message || !event {
		t.Fatalf("notice %v, message %v, event %v: %+v", notice, message, event, got)
	}
}

// TestRecvEventsHandBack: once RecvEvents returned, the pump reads the
// event ring again: TryRecvEvent and Fd see events that came after.
func TestRecvEventsHandBack(t *testing.T) {
	_, c := emitter(t, nil)
	ctx := ctx5(t)
	fd := c.Fd()
	evs := make([]Event, 8)
	got := make(chan error, 1)
	go func() { // asleep when the event comes: the pump wakes it, and stays off the ring
		k, err := c.RecvEvents(ctx, evs)
		if err == nil && k != 1 {
			err = fmt.Errorf("%d events", k)
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := c.Send(ctx, 1, 0, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, 1, 0, []byte("3")); err != nil { // no reply wakes the pump
		t.Fatal(err)
	}
	if !readable(t, fd, 5000) {
		t.Fatal("Fd not readable: the pump did not take the event ring back")
	}
	for i := range 3 {
		var e Event
		waitFor(t, func() bool { var ok bool; e, ok = c.TryRecvEvent(); return ok })
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("event %d: %q", i, e.Payload)
		}
	}
}

// TestRecvEventsHandler: with an event handler, RecvEvents says the
// events go there.
func TestRecvEventsHandler(t *testing.T) {
	n := startNode(t)
	c := dial(t, n, WithEventHandler(func(Event) {}))
	if _, err := c.RecvEvents(ctx5(t), make([]Event, 1)); err == nil {
		t.Fatal("RecvEvents with an event handler: no error")
	}
}

// TestRecvEventsAllocs: receiving 64-byte events with RecvEvents, into
// the same slice again, allocates nothing, and hands every byte read back
// to the node.
func TestRecvEventsAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	const batch, runs = 16, 100
	const count = batch * (runs + 2)
	sessc := make(chan *Session, 1) // a channel: the race detector cannot see the ring's order
	n := startNode(t)
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) { sessc <- r.Session; return nil, nil })
	c := dial(t, n)
	ctx := ctx5(t)
	if _, err := c.Call(ctx, 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	sess := <-sessc
	evs := make([]Event, batch)
	// A receiver inside: the pump leaves the ring alone while the node
	// fills it; then the node is idle while the receiver is measured.
	c.readers.Add(1)
	c.ringTaken.Store(true)
	payload := make([]byte, 64)
	for range count {
		sess.SendEvent(2, payload)
	}
	waitFor(t, func() bool {
		c.evmu.Lock()
		defer c.evmu.Unlock()
		return c.ev.Pending() >= count*shm.FrameSize(64)
	})
	// The receiver stays (as one looping on RecvEvents does): the
	// hand-back timer does not bring the pump in between batches, should
	// the scheduler delay one past it.
	released := func() uint64 { c.evmu.Lock(); defer c.evmu.Unlock(); return c.ev.Released() }
	if k, err := c.RecvEvents(ctx, evs); err != nil || k != batch {
		t.Fatal(k, err)
	}
	before := released()
	batches := 0
	allocs := testing.AllocsPerRun(runs, func() {
		k, err := c.RecvEvents(ctx, evs)
		if err != nil || k != batch || len(evs[k-1].Payload) != 64 {
			t.Fatal(k, err)
		}
		batches++
	})
	c.readers.Add(-1)
	if allocs != 0 {
		t.Errorf("%v allocations per batch of %d events", allocs, batch)
	}
	if moved := released() - before; moved != uint64(batches*batch*shm.FrameSize(64)) {
		t.Errorf("ring released %d bytes over %d batches", moved, batches)
	}
	t.Logf("%v allocations per batch of %d 64-byte events", allocs, batch)
}

// TestRecvEventAllocs: RecvEvent of 64-byte events, each Released,
// allocates nothing once the buffer pool holds a buffer.
func TestRecvEventAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	const runs = 200
	sessc := make(chan *Session, 1) // a channel: the race detector cannot see the ring's order
	n := startNode(t)
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) { sessc <- r.Session; return nil, nil })
	c := dial(t, n)
	ctx := ctx5(t)
	if _, err := c.Call(ctx, 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	sess := <-sessc
	c.readers.Add(1) // the pump stays off the ring while the node fills it
	c.ringTaken.Store(true)
	payload := make([]byte, 64)
	for range runs + 2 {
		sess.SendEvent(2, payload)
	}
	waitFor(t, func() bool {
		c.evmu.Lock()
		defer c.evmu.Unlock()
		return c.ev.Pending() >= (runs+2)*shm.FrameSize(64)
	})
	c.readers.Add(-1)
	e, err := c.RecvEvent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.Release()
	allocs := testing.AllocsPerRun(runs, func() {
		e, err := c.RecvEvent(ctx)
		if err != nil || len(e.Payload) != 64 {
			t.Fatal(err)
		}
		e.Release()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per event", allocs)
	}
}

// TestRecvEventsWhileViewHeld: a RecvEvents on the goroutine that holds
// an event viewed in place returns what is queued or waits for its ctx,
// without deadlocking on the ring the view holds; after the Release it
// reads the ring again.
func TestRecvEventsWhileViewHeld(t *testing.T) {
	_, c := emitter(t, nil, WithSpin(time.Millisecond))
	ctx := ctx5(t)
	c.readers.Add(1) // the pump leaves the events in the ring, to be viewed there
	c.ringTaken.Store(true)
	if _, err := c.Call(ctx, 1, 0, []byte("3")); err != nil {
		t.Fatal(err)
	}
	v, err := c.RecvEventView(ctx)
	c.readers.Add(-1)
	if err != nil || v.view == nil || string(v.Payload) != "0" {
		t.Fatalf("not viewed in place: %+v, %v", v, err)
	}
	evs := make([]Event, 8)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if k, err := c.RecvEvents(short, evs); !errors.Is(err, context.DeadlineExceeded) || k != 0 {
		t.Fatalf("with a view held: %d events, %v", k, err)
	}
	v.Release()
	if k, err := c.RecvEvents(ctx, evs); err != nil || k != 2 || string(evs[0].Payload) != "1" || string(evs[1].Payload) != "2" {
		t.Fatalf("after the Release: %d events, %v", k, err)
	}
}

// TestBufPoolStaleRelease: a second Release of an event whose buffer was
// lent again meanwhile leaves the new loan alone.
func TestBufPoolStaleRelease(t *testing.T) {
	var p bufPool
	p.wanted.Store(true)                             // a receiver that gives buffers back (TestBufPoolBareUntilReleased)
	for _, size := range []int{64, 100, 200, 1000} { // buffers of one allocation, and a large one
		b1, pb1, gen1 := p.get(bytes.Repeat([]byte{1}, size))
		e1 := Event{Payload: b1, buf: pb1, gen: gen1}
		e1.Release()
		b2, pb2, gen2 := p.get(bytes.Repeat([]byte{2}, size))
		if pb2 != pb1 {
			t.Fatalf("size %d: the buffer given back was not reused", size)
		}
		e1.Release() // stale: the buffer is e2's now
		b3, pb3, _ := p.get(bytes.Repeat([]byte{3}, size))
		if pb3 == pb2 || b2[0] != 2 || b3[0] != 3 {
			t.Fatalf("size %d: a stale Release gave away a buffer in use", size)
		}
		Event{Payload: b2, buf: pb2, gen: gen2}.Release()
		p.free = nil
		p.nfree.Store(0)
	}
}

// TestBufPoolBareUntilReleased: until an event is released, the pool's
// copies are bare ones of the payload's size (an event handler that keeps
// its events pays no pool buffer's header); after a Release, a copy that
// finds no buffer gets one, and the buffers given back are lent again.
func TestBufPoolBareUntilReleased(t *testing.T) {
	var p bufPool
	body := bytes.Repeat([]byte{7}, 100) // a 64-byte group message with its sender and group
	const n = 1000
	keep := make([][]byte, 0, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		b, pb, _ := p.get(body)
		if pb != &p.bare || !bytes.Equal(b, body) {
			t.Fatal("a copy before any Release is not a bare one")
		}
		keep = append(keep, b)
	}
	runtime.ReadMemStats(&after)
	// A bare copy of 100 bytes takes the runtime's 112-byte class; a pool
	// buffer of one allocation took 320 before, and 176 now.
	if per := float64(after.TotalAlloc-before.TotalAlloc) / n; per > 150 {
		t.Errorf("%.0f bytes allocated per copy of %d bytes, want one bare copy", per, len(body))
	}
	Event{Payload: keep[0], buf: &p.bare}.Release()
	b, pb, gen := p.get(body)
	if pb == &p.bare || !bytes.Equal(b, body) {
		t.Fatal("a copy after a Release is still bare")
	}
	Event{Payload: b, buf: pb, gen: gen}.Release()
	if allocs := testing.AllocsPerRun(100, func() {
		b, pb, gen := p.get(body)
		Event{Payload: b, buf: pb, gen: gen}.Release()
	}); allocs != 0 {
		t.Errorf("%v allocations per copy once buffers come back", allocs)
	}
	runtime.KeepAlive(keep)
}

// TestTryRecvEventAfterRecvEvent: a loop that blocks in RecvEvent when it
// has nothing to do and drains with TryRecvEvent otherwise (a publisher
// reading its acknowledgements, say) sees at once the events already
// there, though RecvEvent keeps the event ring a moment after it returns.
//
// Shared memory only: over the socket the node's bridge may send the
// reply before the events.
func TestTryRecvEventAfterRecvEvent(t *testing.T) {
	{
		_, c := emitter(t, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for round := range 50 {
			// The handler sends its three events before its reply: once
			// Call returns they are all in the event ring.
			if _, err := c.Call(ctx, 1, 0, []byte("3")); err != nil {
				t.Fatal(err)
			}
			e, err := c.RecvEvent(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if e.Command != 0 {
				t.Fatalf("round %d: first event %d", round, e.Command)
			}
			for want := uint16(1); want < 3; want++ {
				e, ok := c.TryRecvEvent()
				if !ok {
					t.Fatalf("round %d: event %d waits, TryRecvEvent found nothing", round, want)
				}
				if e.Command != want {
					t.Fatalf("round %d: event %d, want %d", round, e.Command, want)
				}
			}
		}
	}
}

// TestRecvEventsLargeBatchBounded: RecvEvents ends a batch of large
// events at about 256 KiB of payload, however many slots it was given,
// so that the copies the caller is about to read stay in its cache (and
// the ring is given back a part at a time); the rest come with the next
// calls, in order. Both ways: events the pump had queued before the
// first receiver came, and events read from the ring.
func TestRecvEventsLargeBatchBounded(t *testing.T) {
	for _, ring := range []bool{false, true} {
		t.Run(map[bool]string{false: "queued", true: "ring"}[ring], func(t *testing.T) {
			n := startNode(t) // a 1 MiB event ring
			emitService(n)
			c := dial(t, n)
			if ring {
				// As if a receiver had taken the ring already: the pump
				// leaves the events there.
				c.ringTaken.Store(true)
			}
			ctx := ctx5(t)
			const count, size = 12, 64 << 10 // 768 KiB, all in the ring at once
			if _, err := c.Call(ctx, svcEmit, cmdSend, emitRequest(count, size)); err != nil {
				t.Fatal(err)
			}
			evs := make([]Event, 256)
			for i := 0; i < count; {
				k, err := c.RecvEvents(ctx, evs)
				if err != nil {
					t.Fatal(err)
				}
				if k > batchBytes/size {
					t.Fatalf("a batch of %d events of %d bytes: more than %d bytes", k, size, batchBytes)
				}
				for _, e := range evs[:k] {
					checkEvent(t, e, i, size)
					i++
				}
			}
		})
	}
}

// TestHandBackAfterGap: a hand-back timer that fires while the session is
// closing (a reconnection's gap) lets the next receiver's leave arm it
// again: the ring goes back to the pump in the next session, so that its
// requests and handler events are read.
func TestHandBackAfterGap(t *testing.T) {
	_, c := emitter(t, nil)
	c.readers.Add(1)
	c.ringTaken.Store(true)
	c.leaveRing() // arms the timer
	c.handback.Load().Stop()
	c.closing.Store(true)
	c.handBack() // the timer, firing in the gap: nothing to give back
	c.closing.Store(false)
	c.readers.Add(1) // the next session's receiver
	c.leaveRing()
	waitFor(t, func() bool { return !c.ringTaken.Load() })
}
