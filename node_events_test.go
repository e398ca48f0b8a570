package switchboard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// The events a handler sends its caller wait for room in the event ring
// (WithEventWait) and may be written in place (Request.WriteEvent).

const (
	svcEmit     = 9
	cmdSend     = 1 // SendEvent, count and size in the payload
	cmdWrite    = 2 // WriteEvent, the same
	cmdMixed    = 3 // alternates SendEvent and WriteEvent, abandoning a loan before each write
	cmdAbandon  = 4 // a loan abandoned, then one small event
	evSize      = 16 << 10
	emitTimeout = 20 * time.Second
)

// fillEvent writes event i's pattern into p: its number, then bytes that
// depend on it, so that a torn or misplaced payload shows.
func fillEvent(p []byte, i int) {
	binary.LittleEndian.PutUint32(p, uint32(i))
	for j := 4; j < len(p); j++ {
		p[j] = byte(i*7 + j)
	}
}

func checkEvent(t *testing.T, e Event, i, size int) {
	t.Helper()
	want := make([]byte, size)
	fillEvent(want, i)
	if len(e.Payload) != size || !bytes.Equal(e.Payload, want) {
		t.Fatalf("event %d: %d bytes, payload intact %v (starts %x)", i, len(e.Payload), bytes.Equal(e.Payload, want), e.Payload[:min(8, len(e.Payload))])
	}
}

var errAbandon = errors.New("abandoned")

// emitService answers cmdSend, cmdWrite, cmdMixed (count, size) with that
// many events of that size, numbered in their payload from 0.
func emitService(n *Node) {
	n.HandleFunc(svcEmit, func(ctx context.Context, r *Request) ([]byte, error) {
		count, size := int(binary.LittleEndian.Uint32(r.Payload)), int(binary.LittleEndian.Uint32(r.Payload[4:]))
		buf := make([]byte, size)
		for i := range count {
			write := r.Command == cmdWrite || r.Command == cmdMixed && i%2 == 1
			if !write {
				fillEvent(buf, i)
				r.SendEvent(uint16(i), buf)
				continue
			}
			if r.Command == cmdMixed { // a loan given back: nothing of it may show
				err := r.WriteEvent(999, size, func(p []byte) (int, error) {
					for j := range p {
						p[j] = 0xEE
					}
					return len(p), errAbandon
				})
				if err != errAbandon {
					return nil, err
				}
			}
			if err := r.WriteEvent(uint16(i), size, func(p []byte) (int, error) {
				fillEvent(p, i)
				return len(p), nil
			}); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
}

func emitRequest(count, size int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, uint32(count))
	binary.LittleEndian.PutUint32(b[4:], uint32(size))
	return b
}

func connInfoOf(t *testing.T, n *Node, c *Conn) ConnInfo {
	t.Helper()
	for _, ci := range n.Connections() {
		if ci.Address == c.Address() {
			return ci
		}
	}
	t.Fatalf("%s not listed", c.Address())
	return ConnInfo{}
}

// TestEventWaitsForRoom: a handler sends far more than the event ring and
// the node's queue hold together to a client that reads; every event
// arrives, whole and in order, none dropped, because the handler waits
// for room instead of queueing (with a queue of one event, queueing would
// drop most of them). Loaned and copied events keep one order, and a loan
// abandoned before each loan shows nowhere.
func TestEventWaitsForRoom(t *testing.T) {
	for _, cmd := range []uint16{cmdSend, cmdWrite, cmdMixed} {
		t.Run([]string{cmdSend: "SendEvent", cmdWrite: "WriteEvent", cmdMixed: "mixed"}[cmd], func(t *testing.T) {
			bothTransports(t, func(t *testing.T, tr Transport) {
				n := startNode(t, WithRings(1<<20, 1<<20, 64<<10), WithEventQueue(1), WithEventQueueBytes(evSize),
					WithEventWait(time.Minute))
				emitService(n)
				// The client's own buffer holds one event, so that the
				// ring fills while the test does not read.
				c := dial(t, n, WithTransport(tr), WithEventQueue(1))
				ctx, cancel := context.WithTimeout(context.Background(), emitTimeout)
				defer cancel()
				const count = 200 // 3.2 MB through a 64 KiB ring
				done := make(chan error, 1)
				go func() { _, err := c.Call(ctx, svcEmit, cmd, emitRequest(count, evSize)); done <- err }()
				// Over shared memory, nothing is read until the handler has
				// had to wait for room at least once (a reader as quick as
				// the handler would never let the ring fill). Over the
				// socket the client's reader never stops reading (past its
				// bound it drops the oldest instead), so whether the
				// handler ever waits depends on which is quicker: there
				// the test checks only that everything arrives.
				if tr == TransportSHM {
					waitFor(t, func() bool { return connInfoOf(t, n, c).EventWaits > 0 })
				}
				for i := range count {
					e, err := c.RecvEvent(ctx)
					if err != nil {
						t.Fatalf("event %d: %v", i, err)
					}
					if e.Command != uint16(i) || e.Dropped != 0 {
						t.Fatalf("event %d: command %d, dropped %d", i, e.Command, e.Dropped)
					}
					checkEvent(t, e, i, evSize)
					e.Release()
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				noEvent(t, c)
				ci := connInfoOf(t, n, c)
				if ci.Dropped != 0 || (tr == TransportSHM && ci.EventWaits == 0) || ci.EventWaitsExpired != 0 {
					t.Fatalf("dropped %d, waits %d, expired %d", ci.Dropped, ci.EventWaits, ci.EventWaitsExpired)
				}
			})
		})
	}
}

// TestEventWaitStalledClient: a client that stops reading makes the
// handler wait once, for WithEventWait; then its events take the queue's
// path, whose overflow policy drops the oldest and counts every drop: the
// client sees each event it got whole, in order, and the drops in
// Event.Dropped add up to the node's count.
func TestEventWaitStalledClient(t *testing.T) {
	for _, cmd := range []uint16{cmdSend, cmdWrite} {
		t.Run([]string{cmdSend: "SendEvent", cmdWrite: "WriteEvent"}[cmd], func(t *testing.T) {
			n := startNode(t, WithRings(1<<20, 1<<20, 64<<10), WithEventQueue(4), WithEventQueueBytes(1<<20),
				WithEventWait(50*time.Millisecond))
			emitService(n)
			c := dial(t, n, WithEventQueue(1)) // holds one event, then stops reading the ring
			ctx, cancel := context.WithTimeout(context.Background(), emitTimeout)
			defer cancel()
			const count = 100
			start := time.Now()
			if _, err := c.Call(ctx, svcEmit, cmd, emitRequest(count, evSize)); err != nil {
				t.Fatal(err)
			}
			// One wait, not one per event: 100 waits would take 5 s.
			if d := time.Since(start); d > 4*time.Second {
				t.Fatalf("the handler took %v", d)
			}
			ci := connInfoOf(t, n, c)
			if ci.EventWaitsExpired != 1 || ci.Dropped == 0 {
				t.Fatalf("waits %d, expired %d, dropped %d", ci.EventWaits, ci.EventWaitsExpired, ci.Dropped)
			}
			got, dropped, last := 0, uint64(0), -1
			for got+int(dropped) < count {
				e, err := c.RecvEvent(ctx)
				if err != nil {
					t.Fatalf("after %d events and %d dropped: %v", got, dropped, err)
				}
				i := int(e.Command)
				if i != last+1+int(e.Dropped) {
					t.Fatalf("event %d after %d with %d dropped", i, last, e.Dropped)
				}
				checkEvent(t, e, i, evSize)
				e.Release()
				got, dropped, last = got+1, dropped+e.Dropped, i
			}
			if dropped != ci.Dropped || last != count-1 {
				t.Fatalf("client saw %d dropped, node counted %d; last event %d", dropped, ci.Dropped, last)
			}
		})
	}
}

// TestEventWaitClientGone: a client that goes while the handler waits for
// room in its event ring releases the wait at once, whether it said
// goodbye (Close) or not (its socket closed under it, as when its process
// is killed); the node goes on serving others.
func TestEventWaitClientGone(t *testing.T) {
	for _, how := range []string{"close", "killed"} {
		t.Run(how, func(t *testing.T) {
			n := startNode(t, WithRings(1<<20, 1<<20, 64<<10), WithEventWait(time.Hour))
			emitService(n)
			returned := make(chan struct{})
			n.HandleFunc(svcEmit+1, func(ctx context.Context, r *Request) ([]byte, error) {
				defer close(returned)
				p := make([]byte, evSize)
				for i := range 100 {
					r.SendEvent(uint16(i), p)
				}
				return nil, nil
			})
			// Close first waits for the node to take the Send, whose handler
			// holds the request ring until it returns: here, until the
			// goodbye after WithCloseTimeout ends the wait.
			c := dial(t, n, WithEventQueue(1), WithCloseTimeout(200*time.Millisecond))
			if err := c.Send(ctx5(t), svcEmit+1, 0, nil); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return connInfoOf(t, n, c).EventWaits >= 1 })
			switch how {
			case "close":
				c.Close()
			case "killed":
				c.sock.Close() // no goodbye: the node sees EOF, as from a dead process
			}
			select {
			case <-returned:
			case <-time.After(3 * time.Second): // a goodbye's drain limit is 5 s
				t.Fatal("the handler still waits for room after its client went")
			}
			other := dial(t, n)
			echoService(n)
			if _, err := other.Call(ctx5(t), svcEcho, cmdEcho, []byte("x")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWriteEventTooLarge: a loan larger than the largest message is
// refused before fill runs, and nothing is sent.
func TestWriteEventTooLarge(t *testing.T) {
	n := startNode(t, WithMaxMessage(1<<20))
	called := false
	n.HandleFunc(svcEmit, func(ctx context.Context, r *Request) ([]byte, error) {
		err := r.WriteEvent(1, 2<<20, func(p []byte) (int, error) { called = true; return 0, nil })
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("WriteEvent: %v", err)
		}
		if err := r.WriteEvent(1, 8, func(p []byte) (int, error) { return 9, nil }); err == nil {
			t.Error("fill claiming more than its room: no error")
		}
		return nil, nil
	})
	c := dial(t, n)
	if _, err := c.Call(ctx5(t), svcEmit, 0, nil); err != nil {
		t.Fatal(err)
	}
	if called {
		t.Fatal("fill ran for a refused loan")
	}
	noEvent(t, c)
}

// TestWriteEventAbandonFreesRoom: loans abandoned again and again, each
// as large as half the event ring, take no room: the events after them
// all arrive, none waits.
func TestWriteEventAbandonFreesRoom(t *testing.T) {
	n := startNode(t, WithRings(1<<20, 1<<20, 64<<10), WithEventWait(0), WithEventQueue(0), WithEventQueueBytes(0))
	const small = 100
	n.HandleFunc(svcEmit, func(ctx context.Context, r *Request) ([]byte, error) {
		for i := range 50 {
			if err := r.WriteEvent(999, 30<<10, func(p []byte) (int, error) { return len(p), errAbandon }); err != errAbandon {
				return nil, err
			}
			if i < 10 {
				if err := r.WriteEvent(uint16(i), small, func(p []byte) (int, error) { fillEvent(p, i); return small, nil }); err != nil {
					return nil, err
				}
			}
		}
		return nil, nil
	})
	c := dial(t, n)
	if _, err := c.Call(ctx5(t), svcEmit, 0, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		e := recv(t, c)
		if e.Command != uint16(i) || e.Dropped != 0 {
			t.Fatalf("event %d: command %d dropped %d", i, e.Command, e.Dropped)
		}
		checkEvent(t, e, i, small)
	}
	noEvent(t, c)
}

// TestLargeEventsPublishedAsWritten: a handler's large events reach the
// client while the handler is still running (each is published once a
// sixteenth of the ring is written), so that the client copies one out
// while the node writes the next. Here the handler sends one 64 KiB event
// and waits for the client to have it before it sends the second: with
// the events published only at the end of the handler, the client would
// get nothing until the wait ran out.
func TestLargeEventsPublishedAsWritten(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t) // a 1 MiB event ring: published every 64 KiB
		const size = 64 << 10
		seen := make(chan struct{})
		early := make(chan bool, 1)
		n.HandleFunc(svcEmit, func(ctx context.Context, r *Request) ([]byte, error) {
			buf := make([]byte, size)
			fillEvent(buf, 0)
			r.SendEvent(0, buf)
			select {
			case <-seen:
				early <- true
			case <-time.After(2 * time.Second):
				early <- false
			}
			fillEvent(buf, 1)
			r.SendEvent(1, buf)
			return nil, nil
		})
		c := dial(t, n, WithTransport(tr))
		ctx := ctx5(t)
		if err := c.Send(ctx, svcEmit, cmdSend, nil); err != nil {
			t.Fatal(err)
		}
		evs := make([]Event, 4)
		for i := 0; i < 2; {
			k, err := c.RecvEvents(ctx, evs)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs[:k] {
				checkEvent(t, e, i, size)
				if i == 0 {
					close(seen)
				}
				i++
			}
		}
		if !<-early {
			t.Fatal("the first event reached the client only after the handler returned")
		}
	})
}
