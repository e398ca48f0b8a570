package switchboard

import (
	"context"
	"errors"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// WithRequestHandler serves requests from peers (Request, RequestGroup)
// with f, one at a time in arrival order, on a goroutine of the
// connection's own. The returned payload, or error, is the reply. Without
// it (or WithRequestActor) requests arrive as events of kind EventRequest.
// f must not call Close (Close waits for f's goroutine): hand the Close to
// another goroutine. A reply code other than those a peer may send (see
// Request) arrives as ErrHandler.
func WithRequestHandler(f func(ctx context.Context, r *PeerRequest) ([]byte, error)) DialOption {
	return dialOption(func(o *dialOptions) error { o.onRequest = f; return nil })
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
// the connection.) The payload is a view, valid until the handler
// returns. It has no effect with the socket transport.
func WithInlineRequests() DialOption {
	return dialOption(func(o *dialOptions) error { o.inline = true; return nil })
}

// WithRequestActor delivers requests from peers to pid as *PeerRequest
// messages; the actor answers each with Respond.
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
}

// Respond answers the request (for an actor: call it once).
func (r *PeerRequest) Respond(payload []byte, err error) error {
	return r.c.replyPeer(r.handle, payload, err)
}

// serveRequests runs the request handler, or feeds the request actor.
func (c *Conn) serveRequests() {
	ctx := c.life
	for {
		c.emu.Lock()
		q := c.reqq
		c.reqq = nil
		c.emu.Unlock()
		if len(q) == 0 {
			select {
			case <-c.rqwake:
				continue
			case <-c.gone:
				return
			}
		}
		c.bell.Ring() // the pump may have stopped reading events for want of room
		for _, r := range q {
			if c.o.requestPID != nil {
				c.o.requestSys.Root.Send(c.o.requestPID, r)
				continue
			}
			payload, err := c.o.onRequest(ctx, r)
			if ctx.Err() != nil {
				return // closing: the node tells the caller its peer is gone
			}
			r.Respond(payload, err)
		}
	}
}

// serveInline runs the request handler on the pump, in place
// (WithInlineRequests): no goroutine hop. Replies to calls the handler
// makes meanwhile are polled by their callers (see finishCall), since the
// pump is busy here.
func (c *Conn) serveInline(r *PeerRequest) {
	c.inHandler.Store(true)
	close(*c.inlineStarted.Load()) // callers waiting for replies start reading them
	out, err := c.o.onRequest(c.life, r)
	c.inHandler.Store(false)
	next := make(chan struct{})
	c.inlineStarted.Store(&next)
	if c.life.Err() == nil {
		r.Respond(out, err)
	}
}

// queueRequest hands a request to serveRequests.
func (c *Conn) queueRequest(r *PeerRequest) {
	c.emu.Lock()
	c.reqq = append(c.reqq, r)
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
		if errors.As(err, &e) && e.Code != CodeOK && pb.PeerCode(pb.Code(e.Code)) == pb.Code(e.Code) {
			code = pb.Code(e.Code)
			payload = []byte(e.Reason)
		} else {
			code = pb.Code_CODE_HANDLER_ERROR
			payload = []byte(err.Error())
		}
	}
	if len(payload) > c.maxMsg {
		code, payload = pb.Code_CODE_TOO_LARGE, []byte("reply too large")
	}
	return c.writeParts(context.Background(), shm.Header{Kind: pb.KindPeerReply, Aux: uint32(code), ID: c.nextID.Add(1)}, handle[:], payload)
}
