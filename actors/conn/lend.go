package conn

import (
	"runtime"

	"github.com/switchboard-ipc/switchboard/shm"
)

// Writing in place: a pump that sleeps lends its state.
//
// A connection's pump owns the producer side of its client's rings and
// its queues. Anything for the client goes through the actor's mailbox,
// which the pump runs; a pump that sleeps is woken for it by its doorbell.
// For a goroutine that already runs on this node's CPU (the federation's
// link reader, with another node's request or answer) that hand-off is the
// costly part: an eventfd write, then the netpoller's wake of a thread,
// often on the other, halted CPU (10-30 µs on these guests), to copy a few
// bytes into a ring. So a pump that goes to sleep with nothing queued
// lends its state: a goroutine that takes the loan (a compare-and-swap)
// writes its one event or reply itself, publishes it to the client, and
// gives the loan back. The pump, woken meanwhile, takes its state back
// only once the loan is given back, so the two never touch it at once.
//
// A borrower writes only what fits in the ring at once, in one frame, and
// only while nothing waits in the mailbox (what came before it goes
// first); anything else goes through the mailbox as before. It never
// waits, and never runs the actor: a slow client or a stop costs it
// nothing more than a look.
//
// own says who holds the pump's state.
const (
	ownPump     int32 = iota // the pump: running, spinning (or the reaper in its place)
	ownLent                  // the pump sleeps with nothing queued: a borrower may take it
	ownBorrowed              // a borrower holds it
)

// lendable reports whether the pump, about to sleep, may lend its state:
// it serves, and nothing of its own waits (a backlog wakes it on room, a
// goodbye on its position).
func (c *Endpoint) lendable() bool {
	return !c.stopping && !c.stopped && c.leaving == nil && c.backlog.len() == 0
}

// lentReady is readyToRun for a pump that lent its state: it may look
// only at what no borrower changes (lendable held as it lent).
func (c *Endpoint) lentReady() bool {
	c.parked.Store(true)
	return c.nudged.Load() || c.qn.Load() > 0 || c.in.Ready()
}

// reclaim takes the pump's state back from the loan, once a borrower that
// holds it (for a few ring writes) gives it back.
func (c *Endpoint) reclaim() {
	for !c.own.CompareAndSwap(ownLent, ownPump) {
		runtime.Gosched()
	}
}

// borrow takes the pump's state if the pump lent it and nothing waits in
// the mailbox. The caller gives it back (giveBack).
func (c *Endpoint) borrow() bool {
	if c.own.Load() != ownLent || c.qn.Load() > 0 || !c.own.CompareAndSwap(ownLent, ownBorrowed) {
		return false
	}
	if c.qn.Load() > 0 { // queued meanwhile: it goes first, on the pump
		c.own.Store(ownLent)
		return false
	}
	return true
}

// giveBack ends a loan, then rings bell (if not nil): the client's
// doorbell, rung only once the loan is given back, so that the scheduler,
// which may run the woken client on this CPU at once, never keeps the
// pump waiting for a borrower it put aside.
func (c *Endpoint) giveBack(bell *shm.Doorbell) {
	c.own.Store(ownLent)
	if bell != nil {
		bell.Ring() // an error means the doorbell is closed: the client is gone anyway
	}
	c.nudged.Store(true)
	if c.parked.Load() && c.parked.CompareAndSwap(true, false) {
		c.bell.Ring()
	}
}

// SendEventsNow is SendEvents from a goroutine that should not wait for
// the pump: the events that fit in the event ring at once are written in
// place when the pump lent its state, the rest go through the mailbox
// after them.
func (c *Endpoint) SendEventsNow(evs []*Delivery) {
	if len(evs) > 0 && c.borrow() {
		n, bell := c.eventsNow(evs)
		c.giveBack(bell)
		clear(evs[:n])
		evs = evs[n:]
	}
	if len(evs) > 0 {
		c.SendEvents(evs)
	}
}

// eventsNow writes the events of evs that fit, in one frame each, up to
// the first that does not; it returns how many it wrote, and the
// client's doorbell to ring if it sleeps. The borrower's.
func (c *Endpoint) eventsNow(evs []*Delivery) (int, *shm.Doorbell) {
	if c.stopping || c.saidBye.Load() || c.backlog.len() > 0 {
		return 0, nil
	}
	n := 0
	for _, e := range evs {
		d := *e // e may be shared: the write keeps its progress in d
		if c.nextChunk(&d) < d.size() {
			break
		}
		c.takeLateDrops()
		if !c.tryEvent(&d) {
			break
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	c.stats.InPlace.Add(uint64(n))
	return n, c.ev.FlushLater()
}

// PostResultNow is PostResult from a goroutine that should not wait for
// the pump: one peer's answer that fits in the response ring at once is
// written in place when the pump lent its state.
func (c *Endpoint) PostResultNow(r *PeerResult) {
	if c.borrow() {
		done, bell := c.resultNow(r)
		c.giveBack(bell)
		if done {
			return
		}
	}
	c.PostResult(r)
}

// resultNow writes r as peerResult would if that takes no wait and
// nothing else; it reports whether it did, and returns the client's
// doorbell to ring if it sleeps. The borrower's.
func (c *Endpoint) resultNow(r *PeerResult) (bool, *shm.Doorbell) {
	pc := c.bus.calls[r.CallID]
	if pc == nil || pc.group || c.stopping || c.saidBye.Load() || c.ctx.Err() != nil || c.resp.Err() != nil {
		return false, nil
	}
	if n := len(r.Payload); n > c.cfg.MaxMessage || n > c.resp.MaxBody() || !c.resp.Fits(n) {
		return false, nil
	}
	c.peerResult(r)
	c.stats.InPlace.Add(1)
	return true, c.resp.FlushLater()
}
