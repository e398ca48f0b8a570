package switchboard

import (
	"context"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// A responder serves a direct channel's requests on the goroutine that
// reads the channel (directRead): it reads a request, runs the handler
// and writes the reply on the channel's reply ring, all on that goroutine,
// so that a request costs the responder one wake-up (the caller's ring of
// the data bell, and only if the goroutine was parked) and no hand-off to
// another goroutine. A request it cannot serve so (another request waits
// for the handler or runs, WithRequestConcurrency above 1, a request
// actor, no handler) goes to the event queue as before.
//
// While the handler runs, nobody reads the channel: a cancellation the
// caller writes there would wait for the handler it cancels. So a handler
// still running after directWatchAfter starts the watcher, a goroutine
// that reads the channel meanwhile as the event reader does (requests to
// the queue, cancellations to their requests), and hands the ring back
// when the handler returns.

// directWatchAfter is how long a handler runs on the channel goroutine
// before the watcher reads the channel in its place (a variable for tests
// only: set it before the channels are made). Requests the watcher reads
// are queued, and served after the running one by serveRequests.
var directWatchAfter = time.Millisecond

const (
	svcIdle    = iota // no handler runs on the channel goroutine
	svcRunning        // one does: the watcher may start
	svcWatched        // one does, and the watcher reads the channel
)

// directWaits makes a channel end's waits: its reading ring's bell and
// conditions, made once (a wait allocates nothing), and for a responder
// the watcher's timer, stopped.
func (c *Conn) directWaits(ch *dchan) {
	ring := 0
	if ch.caller {
		ring = 1
	}
	ch.bell = ch.link.Bell(ch.link.Spec(ring).DataBell)
	ch.spin = shm.NewSpinner(c.spin)
	if ch.caller {
		// The caller reading: its reply, or any frame (another caller's
		// reply to hand over), or the channel's end. Rearm first: a look
		// after a ring that found nothing must leave the next frame
		// announced (Consumer.Rearm).
		ch.readyFn = func() bool {
			ch.cons.Rearm()
			return ch.cons.Unreleased() || len(ch.leadCall.done) > 0 || ch.ctx.Err() != nil
		}
		ch.spinFn = func() bool { return ch.cons.Unreleased() || len(ch.leadCall.done) > 0 }
		return
	}
	// The channel goroutine parks only while no handler runs on it, so
	// never while the watcher reads: a request, or the bell shut.
	ch.readyFn = func() bool { ch.cons.Rearm(); return ch.cons.Unreleased() }
	ch.spinFn = ch.cons.Unreleased
	ch.watched = make(chan struct{}, 1)
	ch.watchT = time.AfterFunc(time.Hour, func() {
		// The handler runs on (holds) the channel goroutine, which is in
		// wg: the count is not zero, and Close waits for the watcher.
		if ch.svc.CompareAndSwap(svcRunning, svcWatched) {
			c.wg.Go(func() { c.directWatch(ch) })
		}
	})
	ch.watchT.Stop()
}

// directClaim reports whether the channel goroutine may run a request's
// handler itself, and if so holds hmu for it: a request handler
// (WithRequestHandler, one at a time) and no request waiting for it or
// being served. Taken under emu, with the queue: serveRequests takes hmu
// before it takes the queue, so a request served here never overtakes
// one read before it.
func (c *Conn) directClaim() bool {
	if c.o.onRequest == nil || c.o.requestPID != nil || c.o.requestConc > 1 || c.bridge != nil {
		return false
	}
	c.emu.Lock()
	defer c.emu.Unlock()
	return len(c.reqq) == 0 && c.hmu.TryLock()
}

// directServe runs the handler for r, which directClaim let the channel
// goroutine serve (hmu held), and writes its reply on the channel.
func (c *Conn) directServe(ch *dchan, r *PeerRequest) {
	ch.svc.Store(svcRunning)
	ch.watchT.Reset(directWatchAfter)
	payload, err := c.o.onRequest(r.ctx, r)
	if c.life.Err() == nil {
		r.Respond(payload, err) // on the channel's reply ring (directReply), from here
	} else {
		c.endRequest(r) // the connection ends: the caller hears its peer is gone
	}
	// hmu first: the watcher may wait for it (a request it read goes to
	// serveInline, under evmu), and an event reader holding evmu may too
	// (a fence), while the watcher waits for evmu.
	c.hmu.Unlock()
	ch.watchT.Stop()
	// Take the ring back from the watcher, if it started: it parks on the
	// bell with svc in its condition, so it looks again once woken (the
	// store before the look at its announcement, as a producer's publish
	// before its ring).
	if ch.svc.Swap(svcIdle) == svcWatched {
		ch.cons.Wake()
		<-ch.watched
	}
}

// directWatch reads a responder's channel while a handler runs on the
// channel goroutine (svcWatched), as the event reader would: requests to
// the queue (served after the running one, in order: serveRequests waits
// for hmu), messages as events, cancellations to their requests.
func (c *Conn) directWatch(ch *dchan) {
	defer func() { ch.watched <- struct{}{} }()
	ready := func() bool { ch.cons.Rearm(); return ch.cons.Unreleased() || ch.svc.Load() != svcWatched }
	for ch.svc.Load() == svcWatched && ch.ctx.Err() == nil {
		c.evmu.Lock()
		ok, _ := c.directDrain(ch, false, false)
		ended := ch.ended
		c.evmu.Unlock()
		if !ok || ended {
			return
		}
		if !c.eventRoom() {
			time.Sleep(time.Millisecond)
			continue
		}
		ch.cons.Rearm()
		err := ch.bell.WaitUntil(context.Background(), ready)
		ch.cons.Disarm()
		if err != nil {
			return
		}
	}
}
