package switchboard

import (
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Observers: how a program embedding a node (cmd/node's metrics, for one)
// learns how long calls and peer requests take, and what each connection
// did before it went, without the node keeping histograms of its own.
//
// Each observer is a function the node calls on the pump of the
// connection concerned (or on what stands in for it at the connection's
// release), so it must be quick, must not block (an atomic histogram
// update, not a channel send that can wait: while it runs, the
// connection serves nothing) and must not panic (the node does not guard
// observers: a panic lands in whatever the pump was doing, a handler's
// reply or the connection's release). None is set by
// default, and then the node does nothing for it: the pump reads no clock
// and calls nothing. With WithCallObserver set, every call costs two
// clock reads (time.Now, time.Since: tens of nanoseconds with the vDSO)
// and the observer's call; WithPeerObserver, the same per request to
// peers; WithDisconnectObserver, one ConnInfo per connection as it ends.

// observers are the node's observers (nodeOptions.observe).
type observers struct {
	call       func(service uint16, d time.Duration, code Code)
	peer       func(group bool, d time.Duration, code Code)
	disconnect func(ConnInfo)
}

// WithCallObserver makes the node report every call (not send) it
// serves, to a registered service (Handle, HandleActor, the selector, the
// system service) or to the bus (service 0xFFFE: subscribing, listing,
// naming), as its reply is decided: the service id, the time from the
// request's read off the ring to its result (an actor handler's answer,
// or its deadline, included), and the result's code (CodeOK for a reply).
// A call to an actor handler still waiting when its connection ends is
// reported with CodeCanceled, like a peer request cut by a disconnect.
// Calls answered "unknown service" are not reported: their service ids
// are the caller's choice. f runs on the caller's connection's pump and
// must not block nor panic.
func WithCallObserver(f func(service uint16, d time.Duration, code Code)) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.observe.call = f; return nil })
}

// WithPeerObserver makes the node report every request a client sends to
// a peer (Request) or a group (RequestGroup) once the node has handed it
// to at least one target, when it ends: group says which; d runs from
// the request's read to its end; code is the single peer's answer's code,
// CodeOK for a group's gathered reply, CodeDeadlineExceeded past the
// deadline, CodeCanceled when the caller cancelled it or left. Requests
// the node refuses at once (no such name, the policy, too many pending)
// are not reported. f runs on the caller's connection's pump and must
// not block nor panic.
func WithPeerObserver(f func(group bool, d time.Duration, code Code)) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.observe.peer = f; return nil })
}

// WithDisconnectObserver makes the node report each connection once, as
// it ends, with its final counters (as Connections would have listed it;
// the fills are zero). It is called after the connection has left the
// node's table: a Connections listing started after f returns does not
// show it. f runs on the connection's pump and must not block nor panic.
func WithDisconnectObserver(f func(ConnInfo)) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.observe.disconnect = f; return nil })
}

// connObservers fills the observer hooks of a connection's configuration.
func (n *Node) connObservers(cfg *conn.Config) {
	if f := n.o.observe.call; f != nil {
		cfg.ObserveCall = func(service uint16, d time.Duration, code pb.Code) {
			if code != pb.Code_CODE_UNKNOWN_SERVICE {
				f(service, d, Code(code))
			}
		}
	}
	if f := n.o.observe.peer; f != nil {
		cfg.ObservePeer = func(group bool, d time.Duration, code pb.Code) { f(group, d, Code(code)) }
	}
}

// observeDisconnect reports a connection that ended (connClosed, after
// its removal from the table).
func (n *Node) observeDisconnect(c *conn.Endpoint) {
	if f := n.o.observe.disconnect; f != nil {
		ci := connInfo(c)
		ci.RequestFill, ci.ResponseFill, ci.EventFill, ci.EventsQueued, ci.Pending, ci.ActorCalls = 0, 0, 0, 0, 0, 0
		f(ci)
	}
}
