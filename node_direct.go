package switchboard

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	gproto "google.golang.org/protobuf/proto"
)

// Direct peer channels, the node's side: the node brokers a pair of rings
// in a sealed segment between a caller and a responder (BusDirectOpen),
// checks the policy once, when it sets the channel up, and from then on
// the two clients' requests and replies bypass it. It revokes channels
// when a monitor starts watching or the policy changes, and tells the
// survivor when one end disconnects. WIRE.md ("Direct peer channels")
// has the protocol, ARCHITECTURE.md the state machine and the ordering
// argument.

// DirectRingBytes is the capacity of each ring of a direct channel.
const DirectRingBytes = 128 << 10

// MaxDirectChannels is how many direct channels one connection may be an
// end of at once; past it the node refuses to open more (the client keeps
// routing through the node).
const MaxDirectChannels = 16

// WithDirectBrokering lets the node broker direct peer channels between
// its clients (the default), or not: with false, no client is granted
// FEATURE_DIRECT_PEERS and every peer request goes through the node.
func WithDirectBrokering(on bool) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.noDirect = !on; return nil })
}

// directBroker is the node's table of direct channels. mu is a leaf: it is
// never held while a socket is written or another lock taken.
type directBroker struct {
	mu    sync.Mutex
	next  uint64
	chans map[uint64]*brokered
	per   map[*conn.Endpoint]int // channels each connection is an end of

	policyGen atomic.Uint64 // bumped by SetPolicy, after the new policy is stored

	opened, refused, revoked, closed, lost atomic.Uint64
}

// brokered is one channel: a is the caller (it writes ring 0), b the
// responder.
type brokered struct {
	id      uint64
	a, b    *conn.Endpoint
	revoked bool
}

// grantable is the features the node grants a client that asks for them.
func (n *Node) grantable(socketOnly bool) uint32 {
	f := uint32(pb.Feature_FEATURE_PEER_CONTEXT)
	if !socketOnly && !n.o.noDirect {
		f |= uint32(pb.Feature_FEATURE_DIRECT_PEERS)
	}
	return f
}

// directRefuse counts and logs a channel the node would not open; the
// caller keeps routing.
func (n *Node) directRefuse(c *conn.Endpoint, code pb.Code, why string) conn.Result {
	n.direct.refused.Add(1)
	n.o.logger.Debug("direct channel refused", slog.Uint64("conn", c.ID()), slog.String("reason", why))
	return conn.Result{Code: code, Payload: []byte(why)}
}

// directOpen serves BusDirectOpen on the caller's pump.
func (n *Node) directOpen(c *conn.Endpoint, body []byte) conn.Result {
	var m pb.BusName
	if err := gproto.Unmarshal(body, &m); err != nil {
		return n.directRefuse(c, pb.Code_CODE_INVALID_ARGUMENT, err.Error())
	}
	dest := m.GetName()
	if !c.DirectPeers() {
		return n.directRefuse(c, pb.Code_CODE_REFUSED, "direct channels not negotiated")
	}
	if !strings.HasPrefix(dest, ":") {
		return n.directRefuse(c, pb.Code_CODE_INVALID_ARGUMENT, "a direct channel goes to an address")
	}
	gen := n.direct.policyGen.Load()
	to, err := n.resolve(c, dest) // the routed request's own check (ActionSend), counted and logged
	if err != nil {
		e := err.(*Error)
		n.direct.refused.Add(1)
		return conn.Result{Code: pb.Code(e.Code), Payload: []byte(e.Reason)}
	}
	if to == c || !to.DirectPeers() {
		return n.directRefuse(c, pb.Code_CODE_REFUSED, dest+" does not take direct channels")
	}
	if n.monitored(c, to) {
		return n.directRefuse(c, pb.Code_CODE_REFUSED, "a monitor watches an end")
	}
	d := &n.direct
	d.mu.Lock()
	if d.per[c] >= MaxDirectChannels || d.per[to] >= MaxDirectChannels {
		d.mu.Unlock()
		return n.directRefuse(c, pb.Code_CODE_LIMIT_EXCEEDED, fmt.Sprintf("at most %d direct channels per connection", MaxDirectChannels))
	}
	d.next++
	ch := &brokered{id: d.next, a: c, b: to}
	if d.chans == nil {
		d.chans, d.per = map[uint64]*brokered{}, map[*conn.Endpoint]int{}
	}
	d.chans[ch.id] = ch
	d.per[c]++
	d.per[to]++
	d.mu.Unlock()
	n.fdMu.Lock() // descriptors made under fdMu: see refuseOutOfFds
	link, err := shm.NewLink("switchboard-direct", []shm.RingSpec{
		{Capacity: DirectRingBytes, CreatorWrites: true, DataBell: 0, SpaceBell: 1},
		{Capacity: DirectRingBytes, DataBell: 2, SpaceBell: 3},
	})
	n.fdMu.Unlock()
	if err != nil {
		n.directEnd(ch, pb.Code_CODE_INTERNAL, false)
		return n.directRefuse(c, pb.Code_CODE_INTERNAL, err.Error())
	}
	fds := link.Fds()
	// On the caller's pump: each write gives up after conn.ControlWait, so
	// a responder that does not read its socket refuses the channel (and
	// holds up A's pump that long at most) instead of stalling it.
	errA := to.SendControl(&pb.Control{Msg: &pb.Control_DirectChannel{DirectChannel: &pb.DirectChannel{Id: ch.id, Peer: c.Address()}}}, fds)
	if errA == nil {
		errA = c.SendControl(&pb.Control{Msg: &pb.Control_DirectChannel{DirectChannel: &pb.DirectChannel{Id: ch.id, Peer: to.Address(), Caller: true}}}, fds)
	}
	link.Close() // the clients hold the segment now; the node maps none of it
	if errA != nil {
		n.directEnd(ch, pb.Code_CODE_PEER_GONE, true)
		return n.directRefuse(c, pb.Code_CODE_UNDELIVERABLE, "could not hand the channel over")
	}
	d.opened.Add(1)
	// A monitor, a policy change or a disconnection while it was being set
	// up: each of those looks at the table after its own change, and this
	// looks after entering the table, so one of the two sees the other.
	switch {
	case to.Context().Err() != nil || c.Context().Err() != nil:
		n.directEnd(ch, pb.Code_CODE_PEER_GONE, true)
	case n.monitored(c, to) || d.policyGen.Load() != gen:
		n.directRevoke(ch)
	}
	return marshalResult(&pb.DirectRef{Id: ch.id})
}

// directFind returns channel id if c is one of its ends.
func (n *Node) directFind(c *conn.Endpoint, body []byte) *brokered {
	var m pb.DirectRef
	if gproto.Unmarshal(body, &m) != nil {
		return nil
	}
	n.direct.mu.Lock()
	defer n.direct.mu.Unlock()
	ch := n.direct.chans[m.GetId()]
	if ch == nil || ch.a != c && ch.b != c {
		return nil
	}
	return ch
}

// directStart serves BusDirectStart on the caller's pump, in order with
// its routed frames: the marker joins the responder's events after every
// message the caller routed to it before (see ARCHITECTURE.md).
func (n *Node) directStart(c *conn.Endpoint, body []byte) conn.Result {
	ch := n.directFind(c, body)
	if ch == nil || ch.a != c {
		return n.directRefuse(c, pb.Code_CODE_INVALID_ARGUMENT, "no such direct channel")
	}
	n.direct.mu.Lock()
	revoked := ch.revoked
	n.direct.mu.Unlock()
	if revoked || ch.b.Saturated() {
		return n.directRefuse(c, pb.Code_CODE_REFUSED, "channel revoked, or its responder is not reading")
	}
	// The check above is not enough: B's mailbox can fill between it and
	// the flush of this pump's batch. A marker dropped on any path (the
	// mailbox, the event queue, a goodbye) ends the channel instead: B
	// never read ring 0, so A fails what it wrote there at once
	// (CODE_UNDELIVERABLE, as a routed request to B would have) and routes.
	c.Deliver(ch.b, &conn.Delivery{Service: pb.BusService, Command: pb.MsgDirectStart,
		Payload: binary.LittleEndian.AppendUint64(nil, ch.id), OnDrop: func() { n.directMarkerLost(ch) }})
	return conn.Result{}
}

// directMarkerLost ends a channel whose start marker was dropped (counted,
// logged): the caller hears CODE_UNDELIVERABLE. Any goroutine (the one
// that dropped the marker).
func (n *Node) directMarkerLost(ch *brokered) {
	n.direct.lost.Add(1)
	n.o.logger.Debug("direct channel ended: its start marker was dropped", slog.Uint64("conn", ch.b.ID()), slog.Uint64("channel", ch.id))
	n.directEnd(ch, pb.Code_CODE_UNDELIVERABLE, true)
}

// directClose serves BusDirectClose: the caller ended the channel (idle,
// revoked, or set up in vain), or the responder did (the caller wrote
// what does not decode: the caller hears CODE_PROTOCOL_VIOLATION and
// fails what it has in flight on it).
func (n *Node) directClose(c *conn.Endpoint, body []byte) conn.Result {
	ch := n.directFind(c, body)
	switch {
	case ch == nil:
	case ch.a == c:
		n.directEnd(ch, pb.Code_CODE_OK, false)
	default:
		n.directEnd(ch, pb.Code_CODE_PROTOCOL_VIOLATION, true)
	}
	return conn.Result{}
}

// directEnd forgets a channel and tells the responder code, and the
// caller too with tellBoth. Idempotent: only the first call tells.
func (n *Node) directEnd(ch *brokered, code pb.Code, tellBoth bool) {
	d := &n.direct
	d.mu.Lock()
	if d.chans[ch.id] != ch {
		d.mu.Unlock()
		return
	}
	delete(d.chans, ch.id)
	for _, e := range []*conn.Endpoint{ch.a, ch.b} {
		if d.per[e]--; d.per[e] <= 0 {
			delete(d.per, e)
		}
	}
	d.mu.Unlock()
	d.closed.Add(1)
	msg := &pb.Control{Msg: &pb.Control_DirectClosed{DirectClosed: &pb.DirectClosed{Id: ch.id, Code: code}}}
	ch.b.SendControl(msg, nil) // best effort: an end that is gone reads nothing
	if tellBoth {
		ch.a.SendControl(msg, nil)
	}
}

// directRevoke tells a channel's caller to stop using it; the caller
// ends it (KindDirectEnd, then BusDirectClose) once its requests on it
// are answered, and routes from then on.
func (n *Node) directRevoke(ch *brokered) {
	n.direct.mu.Lock()
	if n.direct.chans[ch.id] != ch || ch.revoked {
		n.direct.mu.Unlock()
		return
	}
	ch.revoked = true
	n.direct.mu.Unlock()
	n.direct.revoked.Add(1)
	ch.a.SendControl(&pb.Control{Msg: &pb.Control_DirectClosed{DirectClosed: &pb.DirectClosed{Id: ch.id, Code: pb.Code_CODE_REFUSED}}}, nil)
}

// directRevokeWhere revokes the channels for which f holds (every one,
// with a nil f).
func (n *Node) directRevokeWhere(f func(*brokered) bool) {
	n.direct.mu.Lock()
	var chs []*brokered
	for _, ch := range n.direct.chans {
		if !ch.revoked && (f == nil || f(ch)) {
			chs = append(chs, ch)
		}
	}
	n.direct.mu.Unlock()
	for _, ch := range chs {
		n.directRevoke(ch)
	}
}

// directGone ends the channels of a connection that ended: the other end
// hears CODE_PEER_GONE.
func (n *Node) directGone(c *conn.Endpoint) {
	n.direct.mu.Lock()
	var chs []*brokered
	for _, ch := range n.direct.chans {
		if ch.a == c || ch.b == c {
			chs = append(chs, ch)
		}
	}
	n.direct.mu.Unlock()
	for _, ch := range chs {
		n.directEnd(ch, pb.Code_CODE_PEER_GONE, true)
	}
}

// monitored reports whether a monitor watches a or b. A monitor of a name
// counts as watching everyone: whoever owns the name may be an end.
func (n *Node) monitored(a, b *conn.Endpoint) bool {
	p := n.monitors.Load()
	if p == nil {
		return false
	}
	for _, m := range *p {
		if m.targets == nil || m.targets[a.Address()] || m.targets[b.Address()] {
			return true
		}
		for t := range m.targets {
			if !strings.HasPrefix(t, ":") {
				return true
			}
		}
	}
	return false
}

// directStats fills the direct channels' part of NodeStats.
func (n *Node) directStats(s *NodeStats) {
	n.direct.mu.Lock()
	s.DirectChannels = len(n.direct.chans)
	n.direct.mu.Unlock()
	s.DirectOpened, s.DirectRefused = n.direct.opened.Load(), n.direct.refused.Load()
	s.DirectRevoked, s.DirectClosed = n.direct.revoked.Load(), n.direct.closed.Load()
	s.DirectMarkersLost = n.direct.lost.Load()
}
