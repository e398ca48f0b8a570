package conn

import (
	"fmt"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Requests whose caller or target is on another node of the cluster: the
// node's federation stands in for them (the root package's node_fed*.go).

// Caller is who waits for the answers to requests delivered to
// connections: a connection (*Endpoint), or the node's stand-in for a
// caller on another node of the cluster (DeliverRequest).
type Caller interface {
	// ID is unique among the node's callers: a connection's id, or, for
	// a stand-in, a number with the top bit set (connection ids never
	// have it).
	ID() uint64
	// PostResult takes an answer. Any goroutine may call it; it must not
	// block.
	PostResult(*PeerResult)
}

// Remote is a target of a request on another node of the cluster: the
// node's stand-in for it, made per request. Its methods run on the
// caller's pump.
type Remote interface {
	// Key is unique among the targets of the node's requests in flight
	// (the top bit set): its answer comes as a PeerResult From Key.
	Key() uint64
	// Address is the target's address, for a group's results.
	Address() string
	// Ask sends caller's request call to the target (aux: the deadline in
	// microseconds, 0 for none); false means it cannot go (the target's
	// node is down) and no answer will come.
	Ask(caller *Endpoint, call uint64, aux uint32) bool
	// Forget tells the target that caller stopped waiting for call (why);
	// it does nothing if the answer came already.
	Forget(caller *Endpoint, call uint64, why pb.Code)
}

// ReplyHandleOf returns the handle a request's recipient quotes for call
// of caller (a stand-in for a caller on another node).
func ReplyHandleOf(caller Caller, call uint64) []byte { return replyHandle(caller.ID(), call) }

// DeliverRequest delivers a request from a caller that is not a
// connection of this node (the stand-in for one on another node): body as
// pb.AppendRequest makes it, with ReplyHandleOf(caller, call). The answer,
// or the node's verdict that none will come (the connection ended, its
// queue was full), goes to caller.PostResult. It returns an error code
// when the request cannot be delivered at all (then caller hears
// nothing). Any goroutine may call it, one at a time per caller for the
// order to hold; the request is written in place when it can be
// (SendEventsNow).
func (c *Endpoint) DeliverRequest(caller Caller, call uint64, body []byte) (pb.Code, string) {
	if !c.cfg.PeerContext {
		var err error
		if body, err = pb.WithoutDeadline(body); err != nil {
			return pb.Code_CODE_INTERNAL, "bad request body"
		}
	}
	if len(body) > c.MaxEvent() {
		return pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes: more than %s takes (%d)", len(body), c.Address(), c.MaxEvent())
	}
	if !c.expect(caller, call) {
		return pb.Code_CODE_PEER_GONE, c.Address() + " disconnected"
	}
	c.SendEventsNow([]*Delivery{{Service: pb.BusService, Command: pb.MsgRequest, Payload: body, caller: caller, callID: call}})
	return pb.Code_CODE_OK, ""
}

// ForgetRequest: the caller of a request DeliverRequest delivered no
// longer waits for it (why); the client hears it (MsgCancel) if it has not
// answered. Any goroutine may call it.
func (c *Endpoint) ForgetRequest(caller Caller, call uint64, why pb.Code) {
	c.forgetIncoming(caller, call, why)
}
