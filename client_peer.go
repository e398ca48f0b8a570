package switchboard

import (
	"context"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// WithRequestHandler serves requests from peers (Request, RequestGroup)
// with f, on goroutines of the connection's own: one at a time in arrival
// order, unless WithRequestConcurrency allows more. The returned payload,
// or error, is the reply. Without it (or WithRequestActor) requests
// arrive as events of kind EventRequest.
//
// f's ctx is the request's (PeerRequest.Context): it carries the caller's
// deadline and is cancelled when the caller stops waiting or disconnects,
// and when this connection closes; f should return then (its reply is
// dropped, and counted by the node). Close waits for f: f must not call
// Close (hand it to another goroutine), and must return once ctx is done.
// A reply code other than those a peer may send (see Request) arrives as
// ErrHandler.
func WithRequestHandler(f func(ctx context.Context, r *PeerRequest) ([]byte, error)) DialOption {
	return dialOption(func(o *dialOptions) error { o.onRequest = f; return nil })
}

// WithRequestConcurrency lets WithRequestHandler's handler serve up to n
// requests at once (n ≥ 1; default 1). What each setting keeps:
//
//   - n = 1: requests are served in arrival order, one at a time; a
//     request's handler starts only once the one before it returned, so
//     the handler needs no locks of its own. A handler that does not
//     return holds up every later request to this connection (its ctx is
//     still cancelled at the caller's deadline, cancel or disconnection).
//   - n > 1: requests are taken up in arrival order, but run on up to n
//     goroutines at once: two requests may start their handlers in either
//     order a moment apart, and finish in any order. Replies are matched
//     to their callers by handle, so no caller sees another's reply, and
//     one caller's requests keep no order among themselves. A handler that
//     does not return holds only its own goroutine; once n are held, later
//     requests wait as with n = 1.
//
// The default is 1 because it was the contract before this option
// existed: a handler written for one request at a time would race with
// itself if the default changed under it. Requests waiting for a handler
// count against the connection's event queue (WithEventQueue): while it
// is full, no event is read.
//
// It does not apply to WithRequestActor (the actor gets each request as a
// message, in arrival order, and may answer in any order), nor to
// WithInlineRequests with the shared-memory transport (one at a time, on
// the reading goroutine).
func WithRequestConcurrency(n int) DialOption {
	return dialOption(func(o *dialOptions) error {
		if n < 1 {
			return errors.New("switchboard: request concurrency must be at least 1")
		}
		o.requestConc = n
		return nil
	})
}

// WithInlineRequests makes WithRequestHandler's handler run on the
// goroutine that reads the connection's rings, in place, instead of on a
// goroutine of its own: one goroutine hop less per request (about a
// quarter of a peer round trip on a small machine), at a price: while the
// handler runs, no reply or event of this connection is read, so the
// handler must be short and must not wait for this connection's events;
// calls and requests it (or anyone) makes on this connection meanwhile
// still work, their callers reading their replies themselves every 50 µs.
// (Replies nobody waits for any more are not read while it runs: a
// handler that runs long enough for them to fill the response ring stalls
// the connection.) Requests run one at a time, in arrival order; the
// handler's ctx carries the caller's deadline, but it is not cancelled
// when the caller gives up or disconnects (the news is an event, and the
// goroutine that would read it is the handler's). The payload is a view,
// valid until the handler returns. It has no effect with the socket
// transport. A request that comes over a direct channel (WithDirectPeers)
// runs on the goroutine that read it from the channel, with this option
// or without, and its ctx is cancelled as WithRequestHandler says.
func WithInlineRequests() DialOption {
	return dialOption(func(o *dialOptions) error { o.inline = true; return nil })
}

// WithRequestActor delivers requests from peers to pid as *PeerRequest
// messages, in arrival order; the actor answers each with Respond, in any
// order. The request's Context carries the caller's deadline and is
// cancelled when the caller stops waiting or disconnects.
func WithRequestActor(sys *actor.ActorSystem, pid *actor.PID) DialOption {
	return dialOption(func(o *dialOptions) error { o.requestSys, o.requestPID = sys, pid; return nil })
}

// PeerRequest is a request from a peer, for WithRequestHandler or
// WithRequestActor.
type PeerRequest struct {
	From    string // the caller's address
	To      string // what it was sent to: this client's address, a name it owns, or a group
	Payload []byte // the handler may keep it

	c      *Conn
	handle [pb.ReplyHandleSize]byte
	ctx    context.Context
	cancel context.CancelCauseFunc // nil for an inline request: nothing cancels it
	stop   context.CancelFunc      // the deadline's, if any
}

// Context returns the request's context. Its deadline is the caller's (as
// the node measured it when it routed the request, counted from when this
// client read it). It is cancelled when the caller stops waiting (it
// cancels, or its deadline passes) or disconnects, when the request is
// answered, and when this connection ends; context.Cause says which:
// context.Canceled, context.DeadlineExceeded, ErrPeerGone (the caller
// disconnected), or the connection's Err when it ended. A node that predates this (Welcome without
// FEATURE_PEER_CONTEXT) sends neither the deadline nor the cancellation.
func (r *PeerRequest) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}

// Respond answers the request (for an actor: call it once). An answer
// after the caller stopped waiting is dropped by the node, and counted.
func (r *PeerRequest) Respond(payload []byte, err error) error {
	r.c.endRequest(r)
	return r.c.replyPeer(r.handle, payload, err)
}

// newRequest makes a request to be served off the pump, with a context
// the node's MsgCancel can cancel (see peerCanceled), registered by
// queueRequest. micros is the deadline (0: none).
func (c *Conn) newRequest(from, to string, handle [pb.ReplyHandleSize]byte, micros uint32, payload []byte) *PeerRequest {
	r := &PeerRequest{From: from, To: to, Payload: payload, c: c, handle: handle}
	r.ctx, r.cancel = context.WithCancelCause(c.life)
	if micros > 0 {
		r.ctx, r.stop = context.WithDeadline(r.ctx, time.Now().Add(time.Duration(micros)*time.Microsecond))
	}
	return r
}

// endRequest forgets an answered request and releases its context.
func (c *Conn) endRequest(r *PeerRequest) {
	if r.cancel == nil {
		return
	}
	c.emu.Lock()
	delete(c.served, r.handle)
	c.emu.Unlock()
	r.cancel(nil)
	if r.stop != nil {
		r.stop()
	}
}

// peerCanceled handles a MsgCancel body: the request's caller stopped
// waiting, or is gone. It reports false for a body that does not decode.
func (c *Conn) peerCanceled(body []byte) bool {
	h, why, err := pb.DecodeCancel(body)
	if err != nil {
		return false
	}
	var key [pb.ReplyHandleSize]byte
	copy(key[:], h)
	c.emu.Lock()
	r := c.served[key]
	delete(c.served, key)
	c.emu.Unlock()
	if r == nil {
		return true // answered already, inline, or served as an event
	}
	cause := context.Canceled
	switch why {
	case pb.Code_CODE_PEER_GONE:
		cause = ErrPeerGone
	case pb.Code_CODE_DEADLINE_EXCEEDED:
		cause = context.DeadlineExceeded
	}
	r.cancel(cause)
	return true
}

// serveRequests runs the request handler, or feeds the request actor.
func (c *Conn) serveRequests() {
	// A direct channel's goroutine may run the handler too (directClaim):
	// hmu keeps them one at a time, taken before the queue so that no
	// request served there overtakes one taken here.
	serial := c.dir != nil && c.o.requestPID == nil && c.o.requestConc == 1
	for {
		if serial {
			// Only when there is something to take: hmu held here for an
			// empty look would send the channel goroutine's request to the
			// queue (directClaim only tries it).
			c.emu.Lock()
			empty := len(c.reqq) == 0
			c.emu.Unlock()
			if empty {
				select {
				case <-c.rqwake:
					continue
				case <-c.gone:
					c.requestActorGone()
					return
				}
			}
			c.hmu.Lock()
		}
		c.emu.Lock()
		// Whoever takes the queue from full to not full rings the pump's
		// bell (it stops reading events while full); only they: a ring
		// per batch is an eventfd write and a wake-up of the pump per
		// request when requests come one at a time (the direct path).
		wasFull := len(c.equeue)-c.ehead+len(c.reqq) >= c.o.eventQueue
		q := c.reqq
		c.reqq = nil
		c.emu.Unlock()
		if len(q) == 0 {
			if serial {
				c.hmu.Unlock()
			}
			select {
			case <-c.rqwake:
				continue
			case <-c.gone:
				c.requestActorGone()
				return
			}
		}
		if wasFull {
			c.bell.Load().Ring() // the pump may have stopped reading events for want of room
		}
		for _, r := range q {
			switch {
			case c.o.requestPID != nil:
				c.o.requestSys.Root.Send(c.o.requestPID, r)
			case c.o.requestConc > 1:
				if !c.handOff(r) {
					return
				}
			case !c.runRequest(r):
				if serial {
					c.hmu.Unlock()
				}
				return
			}
		}
		if serial {
			c.hmu.Unlock()
		}
	}
}

// runRequest runs the handler for r and answers it; false means the
// connection is ending (the node tells the caller its peer is gone).
func (c *Conn) runRequest(r *PeerRequest) bool {
	payload, err := c.o.onRequest(r.ctx, r)
	if c.life.Err() != nil {
		return false
	}
	r.Respond(payload, err)
	return true
}

// handOff gives r to an idle worker, or to a new one while fewer than
// WithRequestConcurrency run, or else waits for one to be idle. Only
// serveRequests calls it (it owns c.workers); false means the connection
// is ending.
func (c *Conn) handOff(r *PeerRequest) bool {
	select {
	case c.work <- r:
		return true
	default:
	}
	if c.workers < c.o.requestConc {
		c.workers++
		c.wg.Go(func() { c.worker(r) }) // serveRequests is counted in wg: the count is not zero
		return true
	}
	select {
	case c.work <- r:
		return true
	case <-c.gone:
		return false
	}
}

// worker serves r, then whatever handOff gives it, until the connection
// ends. Workers start on demand and stay until then: a steady load costs
// no goroutine start per request.
func (c *Conn) worker(r *PeerRequest) {
	for c.runRequest(r) {
		select {
		case r = <-c.work:
		case <-c.gone:
			return
		}
	}
}

// serveInline runs the request handler on the pump, in place
// (WithInlineRequests): no goroutine hop. Replies to calls the handler
// makes meanwhile are polled by their callers (see finishCall), since the
// pump is busy here.
func (c *Conn) serveInline(r *PeerRequest, micros uint32) {
	if c.dir != nil { // one at a time with a direct channel's goroutine (directClaim)
		c.hmu.Lock()
		defer c.hmu.Unlock()
	}
	r.ctx = c.life
	if micros > 0 {
		r.ctx, r.stop = context.WithDeadline(c.life, time.Now().Add(time.Duration(micros)*time.Microsecond))
	}
	c.inHandler.Store(true)
	close(*c.inlineStarted.Load()) // callers waiting for replies start reading them
	out, err := c.o.onRequest(r.ctx, r)
	c.inHandler.Store(false)
	next := make(chan struct{})
	c.inlineStarted.Store(&next)
	if r.stop != nil {
		r.stop()
	}
	if c.life.Err() == nil {
		r.Respond(out, err)
	}
}

// queueRequest hands a request to serveRequests, and registers it for
// peerCanceled.
func (c *Conn) queueRequest(r *PeerRequest) {
	c.emu.Lock()
	c.reqq = append(c.reqq, r)
	if c.served == nil {
		c.served = map[[pb.ReplyHandleSize]byte]*PeerRequest{}
	}
	c.served[r.handle] = r
	c.emu.Unlock()
	select {
	case c.rqwake <- struct{}{}:
	default:
	}
}

// replyPeer writes the answer to a peer's request.
func (c *Conn) replyPeer(handle [pb.ReplyHandleSize]byte, payload []byte, err error) error {
	code := pb.Code_CODE_OK
	if err != nil {
		var e *Error
		switch {
		case errors.Is(err, context.DeadlineExceeded): // the caller's deadline, which the handler saw first
			code, payload = pb.Code_CODE_DEADLINE_EXCEEDED, nil
		case errors.Is(err, context.Canceled):
			code, payload = pb.Code_CODE_CANCELED, nil
		case errors.As(err, &e) && e.Code != CodeOK && pb.PeerCode(pb.Code(e.Code)) == pb.Code(e.Code):
			code = pb.Code(e.Code)
			payload = []byte(e.Reason)
		default:
			code = pb.Code_CODE_HANDLER_ERROR
			payload = []byte(err.Error())
		}
	}
	if len(payload) > c.maxMsg {
		code, payload = pb.Code_CODE_TOO_LARGE, []byte("reply too large")
	}
	if c.dir != nil && isDirectHandle(handle) { // client_direct_io.go
		return c.directReply(handle, code, payload)
	}
	return c.replyRouted(handle, code, payload)
}

// replyRouted writes a peer reply for the node to route. (Apart from
// replyPeer: the handle's bytes go to the heap here, and only here.)
func (c *Conn) replyRouted(handle [pb.ReplyHandleSize]byte, code pb.Code, payload []byte) error {
	return c.writeParts(context.Background(), shm.Header{Kind: pb.KindPeerReply, Aux: uint32(code), ID: c.nextID.Add(1)}, handle[:], payload)
}
