package conn

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// A handler runs on the pump. If it ignores its context when the
// connection ends, the connection does not wait for it: after reapGrace
// the reaper takes the pump's place (it finishes the actor's stop and
// releases the connection: its end is announced, its socket closed, its
// shared memory given back), and the handler's goroutine, when the handler
// returns at last, discards the result, counts it late, unmaps what was
// left of the rings and exits. The service's disconnect hook waits for
// that return, so that a session's handlers and its hook still never run
// at the same time.
//
// Endpoint.serving says where the pump stands with handlers. Its owner,
// the pump, moves it idle → running → idle around each handler, and
// running → sending → running around an event the handler writes itself
// (SendEventFromServe); once the connection's context ends, the reaper
// moves it idle → barred (no handler starts any more; the pump finishes
// as usual) or, after the grace, running → abandoned, and so becomes the
// pump. Every move is a compare-and-swap: whoever makes one owns the
// pump's state, and a failed one tells the pump it lost it.
const (
	handlerIdle      int32 = iota // the pump is in no handler
	handlerRunning                // the pump runs Host.Serve
	handlerSending                // the handler writes an event itself
	handlerAbandoned              // the reaper took over from a running handler
	handlerBarred                 // the connection ended: no handler starts
)

// reapGrace is how long a connection that ended waits for a running
// handler to return before it is released without it: long enough for a
// handler that watches its context, short enough that the client's end
// is announced at once.
const defaultReapGrace = 20 * time.Millisecond

// leaveHandler runs on the pump's goroutine as a handler returns. If the
// reaper took over meanwhile, the goroutine no longer owns anything: it
// counts the handler's result late (if a reply was wanted), unmaps the
// retired rings once the release is done, and exits without returning.
func (c *Endpoint) leaveHandler(reply bool) {
	if c.serving.CompareAndSwap(handlerRunning, handlerIdle) {
		return
	}
	if reply {
		c.countLate()
	}
	<-c.released
	c.cfg.Link.Close()
	if c.cfg.Stuck != nil {
		c.cfg.Stuck.Add(-1)
	}
	c.cfg.Logger.Info("abandoned handler returned", slog.Uint64("conn", c.cfg.ID),
		slog.Int("service", int(c.serveSvc)), slog.Int("command", int(c.serveCmd)))
	close(c.lingering)
	runtime.Goexit() // the stack below belongs to the connection that was
}

// reap runs once the connection's context has ended (AfterFunc): it bars
// new handlers, or takes over from one that outlives the grace.
func (c *Endpoint) reap() {
	// The context may have ended from above (the node's), without end:
	// make sure the connection ends.
	c.end(Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "stopped"})
	grace := time.Now().Add(c.cfg.HandlerGrace)
	for {
		switch c.serving.Load() {
		case handlerIdle:
			if c.serving.CompareAndSwap(handlerIdle, handlerBarred) {
				return
			}
		case handlerRunning:
			if time.Now().After(grace) && c.serving.CompareAndSwap(handlerRunning, handlerAbandoned) {
				c.takeOver()
				return
			}
		case handlerAbandoned, handlerBarred:
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// takeOver finishes the pump's work for a pump stuck in a handler.
func (c *Endpoint) takeOver() {
	if c.cfg.Stuck != nil {
		c.cfg.Stuck.Add(1)
	}
	c.cfg.Logger.Warn("handler ignores its context: releasing the connection without waiting for it",
		slog.Uint64("conn", c.cfg.ID), slog.Int("service", int(c.serveSvc)), slog.Int("command", int(c.serveCmd)))
	c.stopping = true
	c.run()
	c.release()
}

// Abandoned reports whether the connection was released while a handler
// still ran.
func (c *Endpoint) Abandoned() bool { return c.serving.Load() == handlerAbandoned }

// Lingering is closed once the connection's pump goroutine has returned:
// right after its release, or, for an abandoned connection, when its
// handler returns.
func (c *Endpoint) Lingering() <-chan struct{} { return c.lingering }

// countLate counts a reply discarded because its caller had gone.
func (c *Endpoint) countLate() {
	c.stats.LateReplies.Add(1)
	if c.cfg.Late != nil {
		c.cfg.Late.Add(1)
	}
}

// actorCall is a call waiting for an actor handler's Complete (or a send
// waiting for a node operation's, noReply).
type actorCall struct {
	ctx     context.Context
	cancel  context.CancelFunc
	stop    func() bool // stops the AfterFunc that ends the call with its context
	target  *actor.PID  // the actor handler, when one serves it
	noReply bool
	service uint16
	start   time.Time // set when Config.ObserveCall is
}

// observe reports an actor call's end to Config.ObserveCall.
func (c *Endpoint) observe(ac *actorCall, code pb.Code) {
	if c.cfg.ObserveCall != nil && !ac.noReply {
		c.cfg.ObserveCall(ac.service, time.Since(ac.start), code)
	}
}

// actorCallDone ends an actor call whose context ended (its deadline, the
// client's cancel, the connection's end) before its Complete.
type actorCallDone struct{ id uint64 }

// ActorCallRoom reports whether the connection may send one more call to
// an actor handler. Only Serve may call it.
func (c *Endpoint) ActorCallRoom() bool { return c.actorGauge.Load() < int64(c.cfg.MaxActorCalls) }

// waitActor records a call that Serve left pending, until its Complete or
// the end of its context, whichever comes first.
func (c *Endpoint) waitActor(id uint64, ctx context.Context, cancel context.CancelFunc, target *actor.PID, service uint16, start time.Time) {
	if c.actorCalls == nil {
		c.actorCalls = map[uint64]*actorCall{}
	}
	stop := context.AfterFunc(ctx, func() { c.sys.Root.Send(c.pid, &actorCallDone{id: id}) })
	c.actorCalls[id] = &actorCall{ctx: ctx, cancel: cancel, stop: stop, target: target, service: service, start: start}
	c.actorGauge.Store(int64(len(c.actorCalls)))
}

// waitSend records a send that Serve left pending (a node operation, which
// completes it): its Complete writes nothing.
func (c *Endpoint) waitSend(id uint64) {
	if c.actorCalls == nil {
		c.actorCalls = map[uint64]*actorCall{}
	}
	c.actorCalls[id] = &actorCall{noReply: true}
	c.actorGauge.Store(int64(len(c.actorCalls)))
}

// dropActorCalls, at release, forgets the calls still waiting: their
// AfterFuncs are stopped first, so that the connection's end does not
// start one goroutine and one dead letter per call. Each is reported to
// Config.ObserveCall as CODE_CANCELED, as a peer request cut by the
// disconnect is to ObservePeer.
func (c *Endpoint) dropActorCalls() {
	for id, ac := range c.actorCalls {
		if ac.stop != nil {
			ac.stop()
		}
		delete(c.actorCalls, id)
		c.observe(ac, pb.Code_CODE_CANCELED)
	}
	c.actorGauge.Store(0)
}

// ActorCalls returns how many of the connection's calls wait for an actor
// handler. Any goroutine may call it (the count may be a moment old).
func (c *Endpoint) ActorCalls() int { return int(c.actorGauge.Load()) }

// complete writes the result of an actor call, unless it came too late.
func (c *Endpoint) complete(m *Completion) {
	ac := c.actorCalls[m.ID]
	if ac == nil && c.cfg.CompleteUnknown {
		if c.ctx.Err() == nil {
			c.writeReply(m.ID, m.Result)
		}
		return
	}
	if ac == nil {
		c.countLate() // its context ended first, or Respond was called twice
		return
	}
	delete(c.actorCalls, m.ID)
	c.actorGauge.Store(int64(len(c.actorCalls)))
	if ac.noReply {
		return
	}
	c.dropCancel(m.ID)
	ac.stop()
	ac.cancel()
	c.observe(ac, m.Result.Code)
	if c.ctx.Err() != nil {
		c.countLate()
		return
	}
	c.writeReply(m.ID, m.Result)
}

// actorDone forgets an actor call whose context ended, and answers it as
// its context says (CODE_DEADLINE_EXCEEDED or CODE_CANCELED): the actor's
// result, if it comes, is late.
func (c *Endpoint) actorDone(m *actorCallDone) {
	ac := c.actorCalls[m.id]
	if ac == nil {
		return
	}
	delete(c.actorCalls, m.id)
	c.actorGauge.Store(int64(len(c.actorCalls)))
	c.dropCancel(m.id)
	res := Result{Code: pb.Code_CODE_CANCELED, Payload: []byte("cancelled before the actor answered")}
	if errors.Is(ac.ctx.Err(), context.DeadlineExceeded) {
		res = Result{Code: pb.Code_CODE_DEADLINE_EXCEEDED, Payload: []byte("no answer from the actor by the deadline")}
	}
	ac.cancel()
	c.observe(ac, res.Code)
	if c.ctx.Err() == nil {
		c.writeReply(m.id, res)
	}
}

// FailActorCalls answers, with CODE_INTERNAL, the calls waiting for the
// actor handler pid, which stopped: what was in its mailbox is lost. Any
// goroutine may call it.
func (c *Endpoint) FailActorCalls(pid *actor.PID) {
	c.sys.Root.Send(c.pid, &actorStopped{pid: pid})
}

// actorStopped asks the pump to fail the calls waiting for pid.
type actorStopped struct{ pid *actor.PID }

func (c *Endpoint) actorStopped(m *actorStopped) {
	for id, ac := range c.actorCalls {
		if ac.target == nil || !ac.target.Equal(m.pid) {
			continue
		}
		delete(c.actorCalls, id)
		c.dropCancel(id)
		ac.stop()
		ac.cancel()
		c.observe(ac, pb.Code_CODE_INTERNAL)
		if c.ctx.Err() == nil {
			c.writeReply(id, Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte("the handler's actor stopped")})
		}
	}
	c.actorGauge.Store(int64(len(c.actorCalls)))
}
