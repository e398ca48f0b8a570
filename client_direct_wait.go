package switchboard

import (
	"context"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// A caller reads its reply from a direct channel itself: no goroutine of
// the channel's reads the reply ring and hands replies to their callers.
// The reader's role is the lock rd: a caller whose request is in flight
// takes it if it is free and reads the ring until its own reply comes
// (handing any other caller's to it on the way), spinning a while, then
// parked on the ring's data bell, which the responder rings only while
// the reader announced its sleep (Consumer.Arm). A caller that finds the
// role taken waits for its reply as a routed call does, or for the role:
// whoever lets go of it while calls are still in flight leaves a token in
// lead. So a request costs the caller one wake-up, by the responder, when
// it had to park, and no hand-off between goroutines of its own while one
// request is in flight at a time.
//
// The keeper (directKeep, one goroutine per caller's channel) reads
// nothing while callers do: it ends the channel when it is retired or
// idle and no call is in flight, and reads the replies of calls given up
// (late ones) while no caller does, so that they never fill the ring and
// stall the responder.

// directWait waits for the reply to call id, written on ch.
func (c *Conn) directWait(ctx context.Context, ch *dchan, id uint64, cl *call) ([]byte, error) {
	for {
		if len(cl.done) == 0 && ch.ctx.Err() == nil && ch.rd.TryLock() {
			c.directLead(ctx, ch, cl)
			ch.rd.Unlock()
			ch.handOn()
		}
		select {
		case <-cl.done:
			return callResult(cl)
		case <-ch.lead: // the reader's role is free: try it
		case <-ctx.Done():
			if c.forget(id) {
				callPool.Put(cl)
				c.cancelCall(id)
			}
			return nil, ctx.Err()
		case <-c.gone:
			c.forget(id)
			return nil, c.err()
		}
	}
}

// directLead reads ch's reply ring until cl's reply came, ctx ended, or the
// channel is ending. The caller holds ch.rd.
func (c *Conn) directLead(ctx context.Context, ch *dchan, cl *call) {
	if ch.unmapped {
		return
	}
	ch.leadCall = cl
	defer func() { ch.leadCall = nil }()
	for {
		if !c.directReplies(ch) || len(cl.done) > 0 {
			return
		}
		if ch.spin.Spin(ch.spinFn) {
			continue
		}
		// Arm releases what was read and announces the sleep; readyFn
		// looks again after the announcement, so a reply published before
		// it is seen, and one published after it rings the bell.
		ch.cons.Arm()
		err := ch.bell.WaitUntil(ctx, ch.readyFn)
		ch.cons.Disarm()
		if err != nil || ch.ctx.Err() != nil {
			return // ctx ended, or the channel is ending: directFail answers
		}
	}
}

// handOn follows a caller's letting go of the reader's role: while calls
// are still in flight on ch, one of their callers takes it up (the token);
// once none is and the channel is retired, the keeper ends it.
func (ch *dchan) handOn() {
	ch.mu.Lock()
	waiting := len(ch.pending) > 0
	ch.mu.Unlock()
	if waiting {
		select {
		case ch.lead <- struct{}{}:
		default:
		}
		return
	}
	if ch.retired.Load() || ch.abandoned.Load() > 0 {
		ch.poke()
	}
}

// directKeep is a caller's channel goroutine (the keeper): it ends the
// channel once retired (or idle for directIdle) with no call in flight,
// and reads late replies while no caller reads. It unmaps the channel
// when it exits.
func (c *Conn) directKeep(ch *dchan) {
	defer c.directClose(ch)
	idle := time.NewTimer(directIdle)
	defer idle.Stop()
	poll := time.NewTimer(time.Hour)
	defer poll.Stop()
	every := time.Millisecond
	for {
		select {
		case <-ch.kick:
		case <-idle.C:
		case <-poll.C:
		case <-ch.ctx.Done():
			return
		}
		// Replies to calls given up (directCancel) may come while no caller
		// reads: read them here, looking again and again less often (1 ms
		// doubling to 64 ms) until none is due. A caller that comes takes
		// the role back at the next look.
		if ch.abandoned.Load() > 0 {
			if ch.rd.TryLock() {
				ok := ch.unmapped || c.directReplies(ch)
				ch.rd.Unlock()
				if !ok {
					return
				}
				ch.handOn()
			}
			poll.Reset(every)
			every = min(2*every, 64*time.Millisecond)
		} else {
			every = time.Millisecond
		}
		ch.mu.Lock()
		quiet := len(ch.pending) == 0
		ch.mu.Unlock()
		if quiet && ch.retired.Load() {
			c.directCloseAt(&pb.DirectRef{Id: ch.id})
			return
		}
		since := time.Since(time.Unix(0, ch.last.Load()))
		switch {
		case !quiet:
			idle.Reset(directIdle)
		case since > directIdle:
			c.directRetire(ch) // pokes: closed at the next turn
		default:
			idle.Reset(directIdle - since)
		}
	}
}
