package conn

import (
	"log/slog"
	"time"
)

// A client that says goodbye (ClientGoodbye) and closes its socket may
// have written requests the pump has not read yet: publications, sends,
// messages to peers, answers to their requests. The connection ends only
// once the pump has served the request ring up to where it stood when the
// goodbye arrived, so that nothing the client handed over is lost; a
// client that never says goodbye (it crashed) is not waited for.

// goodbyeDrainLimit bounds how long a connection whose client said goodbye
// serves the requests written before it.
const goodbyeDrainLimit = 5 * time.Second

// clientLeft tells the pump that its client said goodbye and closed the
// socket.
type clientLeft struct{ why Reason }

// heardGoodbye records, as the client's goodbye arrives on the socket, how
// far the client had written its request ring: everything it wrote before
// the goodbye is published by then (with the socket transport, watch
// itself wrote it, in the socket's order).
func (c *Endpoint) heardGoodbye() {
	c.mapMu.RLock()
	if !c.unmapped {
		// From shared memory: the client may lie. The pump never serves
		// past one ring's worth beyond what it had released.
		pos, done := c.in.Published(), c.in.Released()
		c.byePos.Store(min(max(pos, done), done+uint64(c.in.Capacity())))
	}
	c.mapMu.RUnlock()
	c.saidBye.Store(true)
	c.stopRead() // a handler waiting for room in the event ring stops waiting
}

// leave ends the connection once the pump has served the requests written
// before the goodbye; or sooner, after goodbyeDrainLimit exactly, or when
// one handler has held the pump for a whole HandlerGrace (a handler that
// ignores its context must not keep a gone client's connection: the
// reaper takes over from it as usual once the connection ends).
func (c *Endpoint) leave(why Reason) {
	start := time.Now()
	grace := c.cfg.HandlerGrace
	served := c.stats.Calls.Load() + c.stats.Sends.Load()
	progress := start // when the pump was last seen idle or between handlers
	var check func()
	check = func() {
		now := c.stats.Calls.Load() + c.stats.Sends.Load()
		if c.serving.Load() != handlerRunning || now != served {
			served, progress = now, time.Now()
		}
		stuck := time.Since(progress) >= grace
		left := goodbyeDrainLimit - time.Since(start)
		switch {
		case c.ctx.Err() != nil:
			return
		case stuck:
		case left <= 0: // release counts and logs what is left
		default:
			c.byeTimer.Reset(max(min(left, grace-time.Since(progress), grace/4), time.Millisecond))
			return
		}
		c.end(why)
	}
	c.byeTimer = time.AfterFunc(time.Hour, check) // set before check can run: it resets it
	c.byeTimer.Reset(min(grace/4, goodbyeDrainLimit))
	c.sys.Root.Send(c.pid, &clientLeft{why: why})
}

// leaveWhenServed, on the pump, ends a connection whose client left once
// the request ring is served up to the goodbye.
func (c *Endpoint) leaveWhenServed() {
	if c.leaving == nil {
		return
	}
	if !c.stopping && c.in.Position() < c.byePos.Load() && c.in.Ready() {
		return // more to serve: the next round of run serves it
	}
	why := *c.leaving
	c.leaving = nil
	c.byeTimer.Stop()
	c.end(why)
}

// countUnserved, as the connection is released, counts and logs the frames
// its departed client wrote before it left that the pump did not serve.
// It reads them from the ring without serving them, up to the goodbye's
// position (clamped: the client may lie), on the pump's goroutine.
func (c *Endpoint) countUnserved() {
	if !c.saidBye.Load() {
		return
	}
	var n uint64
	for end := c.byePos.Load(); c.in.Position() < end; n++ {
		if _, err := c.in.Next(); err != nil {
			break
		}
	}
	if n > 0 {
		c.stats.ByeUnserved.Add(n)
		c.cfg.Logger.Warn("client left: frames it wrote before were not served in time",
			slog.Uint64("conn", c.cfg.ID), slog.Uint64("frames", n), slog.Duration("limit", goodbyeDrainLimit))
	}
}
