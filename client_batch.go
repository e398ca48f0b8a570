package switchboard

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// Receiving events in batches.
//
// A receiver in RecvEvents (or RecvEvent, a batch of one) reads the event
// ring itself, under evmu: it copies a batch of events out of shared
// memory into the caller's buffers (RecvEvent: a buffer of the pool) and
// releases the ring once for the batch. From the first receiver on
// (ringTaken) the pump leaves the event ring alone, so nothing is copied
// twice, queued or handed between goroutines. A receiver with nothing to
// read spins (as a caller spins for its reply), then announces that it
// sleeps (evSleep), arms the event ring and waits on ewake; the pump,
// which sleeps on the connection's doorbell anyway, wakes it when the
// node publishes. When no receiver came or left for handbackDelay after
// the last one left, handBack gives the ring back to the pump (for
// TryRecvEvent, Fd, the name clients' notices), and rings it: a receiver
// looping comes back well before that, so the pump does not read ahead
// between two calls and no doorbell rings per batch. RecvEventView takes
// the ring the same way (client_events.go), viewing events in place.

// handbackDelay is how long after the last receiver returned the pump
// reads the event ring again: at least, as the runtime's timers fire
// later (about 1 ms on the guests measured).
const handbackDelay = 200 * time.Microsecond

// batchBytes ends a batch early: a receiver of large events gets them a
// few at a time, in buffers that stay in its cache, rather than filling
// all of evs with copies that pushed each other out.
const batchBytes = 256 << 10

var errEventHandler = errors.New("switchboard: events go to the event handler or actor")

// RecvEvents waits for events and fills evs with as many as wait, up to
// len(evs) (or, for large events, until about 256 KiB of payload: the
// copies stay in the cache for the caller to read), in order, returning
// how many it filled. It reads them from shared memory itself, a batch at
// a time, without a goroutine hand-off when they are there already: the
// way to take many events quickly.
//
// Each event's payload is copied into the buffer evs[i].Payload holds
// (reusing its capacity, growing it if needed), so a loop that passes the
// same evs again receives without allocating; a payload to keep beyond
// the next call must be copied, or its slot's Payload set to nil. The
// events need no Release (it does nothing for them).
//
// Events come in the connection's order whichever way they are taken:
// those already taken by RecvEvent, TryRecvEvent or RecvEventView from
// the same connection came before, and those they take later come after.
// While a RecvEvents call is in progress, and briefly after it returned,
// the events stay in shared memory rather than in the connection's queue:
// TryRecvEvent (and Fd) see them then only when the receiver leaves off.
// Once the connection ended, RecvEvents returns the events that came
// before the end, then Err's error. With an event handler or actor it
// returns an error: the events go to them.
func (c *Conn) RecvEvents(ctx context.Context, evs []Event) (int, error) {
	if c.o.onEvent != nil || c.o.actorPID != nil {
		return 0, errEventHandler
	}
	if len(evs) == 0 {
		return 0, nil
	}
	return c.recvEvents(ctx, evs, false)
}

// recvEvents is RecvEvents, and RecvEvent's way with pooled (one event,
// its payload a copy in the buffer pool).
func (c *Conn) recvEvents(ctx context.Context, evs []Event, pooled bool) (int, error) {
	c.readers.Add(1)
	c.ringTaken.Store(true)
	defer c.leaveRing()
	start := time.Now()
	for i := 1; ; i++ {
		n, err := c.readBatch(evs, pooled)
		if n > 0 {
			if c.evSleep.Load() || c.queued() {
				c.passWake() // another receiver sleeps, or events wait in the queue
			}
			return n, nil
		}
		if err != nil {
			c.end(err)
			return 0, err
		}
		if !shm.SpinsOff() && (i%64 != 0 || time.Since(start) < c.spin) {
			continue // spin a while: the events may come before a wake-up would
		}
		if c.armEvents() {
			continue
		}
		select {
		case <-c.ewake:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-c.gone:
			if n, _ := c.readBatch(evs, pooled); n > 0 {
				return n, nil
			}
			return 0, c.err()
		}
	}
}

// queued reports whether events wait in the queue.
func (c *Conn) queued() bool {
	c.emu.Lock()
	defer c.emu.Unlock()
	return len(c.equeue) > c.ehead
}

// readBatch fills evs with the events queued, then with those in the
// event ring, in order, up to batchBytes of payload, and releases the
// ring once (large events: each time a sixteenth of the ring was copied).
// With pooled, the payloads are copies in the connection's buffer pool
// (for RecvEvent); otherwise they are copied into evs[i].Payload's buffer.
func (c *Conn) readBatch(evs []Event, pooled bool) (int, error) {
	if !c.evmu.TryLock() {
		if c.viewHeld.Load() { // an event viewed in place holds up the ring
			return c.takeQueued(evs, pooled), nil
		}
		c.evmu.Lock()
	}
	defer c.evmu.Unlock()
	// Counted once for the batch.
	var got, lost uint64
	defer func() {
		if got != 0 {
			c.received.Add(got)
		}
		if lost != 0 {
			c.dropped.Add(lost)
		}
	}()
	n, bytes := 0, 0
	// While evmu is held only this loop queues events from the ring (the
	// socket transport's reader queues too, but its events skip the ring:
	// this loop finds it empty): the queue is looked at first, and again
	// only after a frame went into it.
	look := true
	for n < len(evs) {
		if look {
			if e, ok, _ := c.tryRecv(); ok { // a chunked event, a bus message, or the pump's
				evs[n] = c.own(e, evs[n].Payload, pooled)
				bytes += len(evs[n].Payload)
				n++
				if bytes >= batchBytes {
					break
				}
				continue
			}
			look = false
		}
		if c.closing.Load() {
			break
		}
		f, err := c.ev.Next()
		if err == shm.ErrRingEmpty {
			break
		}
		if err != nil {
			c.ev.Release()
			return n, fmt.Errorf("%w: event ring: %w", ErrProtocol, err)
		}
		if f.Kind != pb.KindEvent || f.Service == pb.BusService || f.Flags&pb.FlagMore != 0 || c.evChunks.Pending(f.ID) {
			// Into the queue, or to whoever intercepts it; the loop takes
			// what was queued next.
			if err := c.queueEventFrame(f); err != nil {
				c.ev.Release()
				return n, err
			}
			look = true
			continue
		}
		e := Event{Service: f.Service, Command: f.Command, Seq: f.ID, Dropped: uint64(f.Aux)}
		if pooled {
			e.Payload, e.buf, e.gen = c.evbufs.get(f.Body)
		} else {
			e.Payload = append(evs[n].Payload[:0], f.Body...)
		}
		bytes += len(f.Body)
		evs[n] = e
		got++
		lost += uint64(f.Aux)
		n++
		if c.ev.Held() >= c.ev.Capacity()>>4 && !c.closing.Load() {
			// Large events: what was copied goes back now, so that
			// the node writes the next while this loop copies.
			c.ev.Release()
		}
		if bytes >= batchBytes {
			break
		}
	}
	if !c.closing.Load() {
		c.ev.Release()
	}
	return n, nil
}

// armEvents announces that a receiver sleeps until the node publishes
// events: the pump wakes it. It reports whether events came meanwhile
// (then the receiver reads instead of sleeping).
func (c *Conn) armEvents() bool {
	c.evSleep.Store(true)
	if !c.evmu.TryLock() {
		if c.viewHeld.Load() {
			// An event viewed in place holds the ring (maybe this
			// goroutine's): its Release rings the pump, which finds
			// evSleep and arms the ring itself.
			return false
		}
		c.evmu.Lock()
	}
	defer c.evmu.Unlock()
	if c.closing.Load() {
		return false
	}
	c.ev.Arm() // the node rings the doorbell the pump sleeps on
	return c.ev.Ready()
}

// takeQueued fills evs with the events queued, without looking at the
// ring.
func (c *Conn) takeQueued(evs []Event, pooled bool) int {
	n := 0
	for n < len(evs) {
		e, ok, _ := c.tryRecv()
		if !ok {
			break
		}
		evs[n] = c.own(e, evs[n].Payload, pooled)
		n++
	}
	return n
}

// own returns a queued event for RecvEvents (!pooled): a payload from the
// buffer pool is copied into buf, and the pool's buffer goes back.
func (c *Conn) own(e Event, buf []byte, pooled bool) Event {
	if e.buf != nil && !pooled {
		e.Payload = append(buf[:0], e.Payload...)
		e.Release()
		e.buf, e.gen = nil, 0
	}
	return e
}

// leaveRing is a receiver leaving RecvEvents: the last one lets the pump
// take the event ring back a little later. A receiver looping comes back
// at once, so a leave only counts itself while the hand-back timer runs:
// the timer, not each call, decides (handBack), and no timer is reset per
// event.
func (c *Conn) leaveRing() {
	if c.readers.Add(-1) != 0 {
		return
	}
	c.leaves.Add(1)
	if c.handbackArmed.Load() {
		return
	}
	t := c.handback.Load()
	if t == nil {
		nt := time.AfterFunc(time.Hour, c.handBack)
		if !c.handback.CompareAndSwap(nil, nt) {
			nt.Stop()
		}
		t = c.handback.Load()
	}
	if !c.handbackArmed.Swap(true) {
		c.leavesSeen.Store(c.leaves.Load()) // this leave is the one it waits after
		t.Reset(handbackDelay)
	}
}

// handBack wakes the pump to read the event ring again, and to arm it
// (which it does not while receivers read it), once no receiver came or
// left for a whole handbackDelay: while they do, it looks again a delay
// later. A receiver inside when it looks arms it again when it leaves.
func (c *Conn) handBack() {
	if c.closing.Load() {
		// Closed, or a reconnection's gap: the next receiver to leave
		// (in the next session) arms the timer again.
		c.handbackArmed.Store(false)
		return
	}
	if n := c.leaves.Load(); c.leavesSeen.Swap(n) != n {
		c.handback.Load().Reset(handbackDelay) // receivers are at it
		return
	}
	c.handbackArmed.Store(false) // a receiver leaving from now on arms it again
	if c.readers.Load() != 0 {
		return // one is inside: it keeps the ring, and arms the timer when it leaves
	}
	c.ringTaken.Store(false)
	if c.readers.Load() != 0 { // one came back meanwhile: it keeps the ring
		c.ringTaken.Store(true)
		return
	}
	if !c.mapMu.TryRLock() {
		return
	}
	closing := c.closing.Load()
	c.mapMu.RUnlock()
	if !closing {
		c.bell.Load().Ring()
	}
}

// wakeReader is the pump's part: a receiver sleeps in RecvEvents and the
// node published events; wake it.
func (c *Conn) wakeReader() {
	if c.evSleep.Load() && c.ev.Unreleased() && c.evSleep.CompareAndSwap(true, false) {
		c.passWake()
	}
}

// readyBatch is the pump's condition to wake while receivers read the
// event ring: a reply, the last receiver gone, or events for a sleeping
// one.
func (c *Conn) readyBatch() bool {
	if c.closing.Load() || c.resp.Unreleased() || !c.ringTaken.Load() {
		return true
	}
	if !c.evSleep.Load() {
		return false
	}
	// A receiver went to sleep after the pump parked, maybe without
	// arming the ring (an event viewed in place held it): announce
	// before looking, as Park does for its conditions.
	c.ev.Rearm()
	return c.ev.Unreleased()
}
