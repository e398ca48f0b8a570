package conn

import (
	"runtime"

	"github.com/asynkron/protoactor-go/actor"
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
// the mailbox: no run handed to the pump (qn) and no message posted and
// not yet handled (posted, which a message joins before it enters the
// mailbox and leaves once the actor has handled it; a suspended mailbox
// keeps it). The caller gives it back (giveBack), whatever happens.
func (c *Endpoint) borrow() bool {
	if c.own.Load() != ownLent || c.mailboxBusy() || !c.own.CompareAndSwap(ownLent, ownBorrowed) {
		return false
	}
	if c.mailboxBusy() { // posted meanwhile: it goes first, on the pump
		c.own.Store(ownLent)
		return false
	}
	return true
}

func (c *Endpoint) mailboxBusy() bool { return c.qn.Load() > 0 || c.posted.Load() > 0 }

// newMailbox makes the actor's mailbox: protoactor's default, whose
// middleware keeps posted (mailboxBusy).
func (c *Endpoint) newMailbox() actor.Mailbox { return actor.Unbounded(postedCount{c})() }

// postedCount counts the messages posted to the mailbox and not yet
// handled: protoactor calls MessagePosted before a message enters the
// mailbox, MessageReceived after the actor has handled it (user and
// system messages alike), so the count never reads 0 while one waits.
type postedCount struct{ c *Endpoint }

func (postedCount) MailboxStarted()       {}
func (p postedCount) MessagePosted(any)   { p.c.posted.Add(1) }
func (p postedCount) MessageReceived(any) { p.c.posted.Add(-1) }
func (postedCount) MailboxEmpty()         {}

// A loan's outcome, for giveBack: touched once the borrower began to
// write, wrote once it finished, bell the client's doorbell to ring.
type loan struct {
	touched, wrote bool
	bell           *shm.Doorbell
}

// giveBack ends a loan (deferred by the borrower: a panic gives it back
// too). After a write, it rings the client's doorbell (if the client
// sleeps) only now that the loan is given back, so that the scheduler,
// which may run the woken client on this CPU at once, never keeps the
// pump waiting for a borrower it put aside. The pump sleeps on: the
// client's answer wakes it. A write cut short (a panic) rings the pump
// (nudged), whose round publishes what was written.
func (c *Endpoint) giveBack(l *loan) {
	c.own.Store(ownLent)
	switch {
	case l.wrote:
		if l.bell != nil {
			l.bell.Ring() // an error means the doorbell is closed: the client is gone anyway
		}
	case l.touched:
		c.nudged.Store(true)
		if c.parked.Load() && c.parked.CompareAndSwap(true, false) {
			c.bell.Ring()
		}
	}
}

// SendEventsNow is SendEvents from a goroutine that should not wait for
// the pump: the events that fit in the event ring at once are written in
// place when the pump lent its state, the rest go through the mailbox
// after them.
func (c *Endpoint) SendEventsNow(evs []*Delivery) {
	if len(evs) > 0 && c.borrow() {
		n := c.eventsNow(evs)
		clear(evs[:n])
		evs = evs[n:]
	}
	if len(evs) > 0 {
		c.SendEvents(evs)
	}
}

// eventsNow writes the events of evs that fit, in one frame each, up to
// the first that does not, and returns how many it wrote. It holds the
// loan, and gives it back.
func (c *Endpoint) eventsNow(evs []*Delivery) (n int) {
	var l loan
	defer c.giveBack(&l)
	if c.stopping || c.saidBye.Load() || c.backlog.len() > 0 {
		return 0
	}
	for _, e := range evs {
		d := *e // e may be shared: the write keeps its progress in d
		if c.nextChunk(&d) < d.size() {
			break
		}
		l.touched = true
		c.takeLateDrops()
		if !c.tryEvent(&d) { // no room, or a broken ring: the pump's to handle
			break
		}
		n++
	}
	if n > 0 {
		c.stats.InPlace.Add(uint64(n))
		l.bell, l.wrote = c.ev.FlushLater(), true
	}
	return n
}

// PostResultNow is PostResult from a goroutine that should not wait for
// the pump: one peer's answer that fits in the response ring at once is
// written in place when the pump lent its state.
func (c *Endpoint) PostResultNow(r *PeerResult) {
	if c.borrow() && c.resultNow(r) {
		return
	}
	c.PostResult(r)
}

// resultNow writes r as peerResult would, if that takes nothing but a
// write that fits: a call to one peer, no observer (WithPeerObserver's
// hook runs on the pump), a ring with room and not broken (checked in that
// order: Fits may find it broken), so that nothing can fail, wait or end
// the connection here. It reports whether it did. It holds the loan, and
// gives it back.
func (c *Endpoint) resultNow(r *PeerResult) bool {
	var l loan
	defer c.giveBack(&l)
	pc := c.bus.calls[r.CallID]
	if pc == nil || pc.group || c.cfg.ObservePeer != nil || c.stopping || c.saidBye.Load() || c.ctx.Err() != nil {
		return false
	}
	if n := len(r.Payload); n > c.cfg.MaxMessage || n > c.resp.MaxBody() || !c.resp.Fits(n) || c.resp.Err() != nil {
		return false
	}
	l.touched = true
	c.peerResult(r)
	c.stats.InPlace.Add(1)
	l.bell, l.wrote = c.resp.FlushLater(), true
	return true
}
