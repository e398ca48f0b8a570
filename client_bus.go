package switchboard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	gproto "google.golang.org/protobuf/proto"
)

// MsgOption modifies SendTo and Publish.
type MsgOption func(*msgOptions)

type msgOptions struct{ wantAnswer, echo bool }

// WantAnswer makes SendTo or Publish wait for the node to deliver the
// message, and fail with ErrUndeliverable if nobody can take it (unknown
// address, unowned name, empty group).
func WantAnswer() MsgOption { return func(o *msgOptions) { o.wantAnswer = true } }

// Echo delivers a publication to the sender too, if it is a member.
func Echo() MsgOption { return func(o *msgOptions) { o.echo = true } }

// destPrefix checks dest and returns its prefix (prefixFor).
func (c *Conn) destPrefix(dest string) ([]byte, error) {
	if err := checkDest(dest); err != nil {
		return nil, err
	}
	return c.prefixFor(dest), nil
}

// destCache is a destination's prefix, which nobody changes: one
// allocation, as the prefix alone would be.
type destCache struct {
	n int
	b [1 + pb.MaxNameLen]byte
}

// prefixFor returns dest's prefix (checked already): the last one made,
// if it was for dest, so that messages to one destination in a row
// allocate none (and to changing ones, one each, as before).
func (c *Conn) prefixFor(dest string) []byte {
	if d := c.lastDst.Load(); d != nil && string(d.b[1:d.n]) == dest {
		return d.b[:d.n:d.n]
	}
	d := new(destCache)
	d.b[0] = byte(len(dest))
	d.n = 1 + copy(d.b[1:], dest)
	c.lastDst.Store(d)
	return d.b[:d.n:d.n]
}

func checkDest(dest string) error {
	if len(dest) == 0 || len(dest) > pb.MaxNameLen {
		return codeError(pb.Code_CODE_INVALID_ARGUMENT, fmt.Sprintf("destination %q: must be 1 to %d bytes", dest, pb.MaxNameLen))
	}
	return nil
}

// msgOpts applies opts: apart (and not inlined), so that only a call with
// options pays for the value they are applied to (its address escapes to
// them).
//
//go:noinline
func msgOpts(opts []MsgOption) msgOptions {
	var o msgOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// SendTo sends payload to a peer: an address (":n1.mx2z3pcd1ldw.42") or a well-known
// name's owner. Messages from one sender to one destination arrive in the
// order sent. Without WantAnswer it returns once the message is in the
// ring; a message nobody can take is dropped (and counted by the node).
func (c *Conn) SendTo(ctx context.Context, to string, payload []byte, opts ...MsgOption) error {
	return c.sendMsg(ctx, pb.KindPeerSend, to, net.Buffers{payload}, opts)
}

// Publish sends payload to every member of group (but this client, unless
// Echo). Publishing to an empty group is not an error, unless WantAnswer.
func (c *Conn) Publish(ctx context.Context, group string, payload []byte, opts ...MsgOption) error {
	return c.sendMsg(ctx, pb.KindPublish, group, net.Buffers{payload}, opts)
}

// sendMsg sends a message to dest, its payload gathered from parts.
func (c *Conn) sendMsg(ctx context.Context, kind uint16, dest string, parts [][]byte, opts []MsgOption) error {
	var o msgOptions
	if len(opts) > 0 {
		o = msgOpts(opts)
	}
	if err := checkDest(dest); err != nil {
		return err
	}
	h := shm.Header{Kind: kind}
	if o.echo {
		h.Flags |= pb.FlagEcho
	}
	if c.dir != nil && kind == pb.KindPeerSend { // client_direct.go
		if o.wantAnswer {
			c.directRouted(dest)
		} else {
			c.dir.sw.RLock()
			defer c.dir.sw.RUnlock()
			if ch := c.directFor(dest, false); ch != nil {
				return c.directSend(ctx, ch, parts)
			}
		}
	}
	if !o.wantAnswer {
		if n := partsLen(parts); n > c.maxMsg { // the destination is the protocol's, not the user's
			return codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", n, c.maxMsg))
		}
		if err := c.err(); err != nil {
			if err := c.awaitBack(ctx, err); err != nil {
				return err
			}
			return c.sendMsg(ctx, kind, dest, parts, opts)
		}
		h.ID = c.nextID.Add(1)
		var buf [8][]byte
		return c.writeParts(ctx, h, gather(&buf, c.prefixFor(dest), parts)...)
	}
	h.Flags |= pb.FlagWantAnswer
	id, cl, err := c.startFrame(ctx, h, c.prefixFor(dest), parts...)
	if err != nil {
		return err
	}
	c.lead(cl)
	_, err = c.finishCall(ctx, id, cl)
	return err
}

// Request sends a request to a peer (an address or a well-known name) and
// waits for its reply. It fails with ErrUndeliverable at once if nobody is
// there, and with ErrPeerGone at once if the peer disconnects before
// replying; ctx's deadline bounds the wait. A peer's error arrives as
// ErrHandler with its text; a peer may also answer ErrInvalidArgument,
// ErrUnknownCommand, ErrTooLarge, ErrInternal, context.DeadlineExceeded or
// context.Canceled; the node turns any other code a peer sends into
// ErrHandler (a peer cannot pose as the node).
func (c *Conn) Request(ctx context.Context, to string, payload []byte) ([]byte, error) {
	return c.RequestBuffers(ctx, to, net.Buffers{payload})
}

// startRequest registers a request to a peer and writes it, its payload
// gathered from parts; ch is the direct channel it went on, if any (its
// caller reads the reply there: directWait).
func (c *Conn) startRequest(ctx context.Context, to string, parts [][]byte) (id uint64, cl *call, ch *dchan, err error) {
	if c.dir != nil { // client_direct.go: a channel to to, or routed in order with the switch
		c.dir.sw.RLock()
		defer c.dir.sw.RUnlock()
		if ch := c.directFor(to, true); ch != nil { // to was checked when the channel was set up
			id, cl, err := c.directRequest(ctx, ch, parts)
			return id, cl, ch, err
		}
	}
	prefix, err := c.destPrefix(to)
	if err != nil {
		return 0, nil, nil, err
	}
	id, cl, err = c.startFrame(ctx, shm.Header{Kind: pb.KindPeerCall}, prefix, parts...)
	return id, cl, nil, err
}

// GroupResult is one member's answer to RequestGroup.
type GroupResult struct {
	Address string
	Payload []byte
	Err     error // nil, ErrPeerGone, context.DeadlineExceeded, or the member's error
}

// groupGrace is how long RequestGroup waits past its deadline for the
// node's gathered answer, which the node sends at the deadline.
const groupGrace = 250 * time.Millisecond

// RequestGroup sends a request to the members of group present at the
// moment of sending (but this client) and returns one result per member,
// in the order the members connected: its reply, ErrPeerGone if it left before replying, or
// context.DeadlineExceeded if ctx's deadline came first. A group with no
// other member fails with ErrUndeliverable.
func (c *Conn) RequestGroup(ctx context.Context, group string, payload []byte) ([]GroupResult, error) {
	return c.requestGroup(ctx, group, net.Buffers{payload})
}

// requestGroup is RequestGroup with the payload gathered from parts.
func (c *Conn) requestGroup(ctx context.Context, group string, parts [][]byte) ([]GroupResult, error) {
	prefix, err := c.destPrefix(group)
	if err != nil {
		return nil, err
	}
	id, cl, err := c.startFrame(ctx, shm.Header{Kind: pb.KindGroupCall}, prefix, parts...)
	if err != nil {
		return nil, err
	}
	// The node answers at the deadline with what it has: wait a little
	// longer than ctx for that answer, but not when ctx is canceled.
	wait := context.WithoutCancel(ctx)
	var cancel context.CancelFunc
	if dl, ok := ctx.Deadline(); ok {
		wait, cancel = context.WithDeadline(wait, dl.Add(groupGrace))
	} else {
		wait, cancel = context.WithCancel(wait)
	}
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	defer stop()
	body, err := c.finishCall(wait, id, cl)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	var gr pb.GroupReply
	if err := gproto.Unmarshal(body, &gr); err != nil {
		return nil, fmt.Errorf("%w: bad group reply: %w", ErrProtocol, err)
	}
	out := make([]GroupResult, len(gr.GetResults()))
	for i, r := range gr.GetResults() {
		out[i] = GroupResult{Address: r.GetAddress()}
		if r.GetCode() == pb.Code_CODE_OK {
			out[i].Payload = r.GetPayload()
		} else {
			out[i].Err = replyError(r.GetCode(), string(r.GetPayload()))
		}
	}
	return out, nil
}

// busCall calls a bus operation.
func (c *Conn) busCall(ctx context.Context, cmd uint16, m gproto.Message, reply gproto.Message) error {
	var body []byte
	if m != nil {
		var err error
		if body, err = gproto.Marshal(m); err != nil {
			return err
		}
	}
	out, err := c.Call(ctx, pb.BusService, cmd, body)
	if err != nil {
		return err
	}
	if reply != nil {
		if err := gproto.Unmarshal(out, reply); err != nil {
			return fmt.Errorf("%w: bad bus reply: %w", ErrProtocol, err)
		}
	}
	return nil
}

// Subscribe joins group: every message published to it reaches this
// client's events from the moment Subscribe returns. Subscribing twice is
// harmless. Reserved groups (GroupConnections, GroupGroups, GroupNames)
// carry the node's notices.
func (c *Conn) Subscribe(ctx context.Context, group string) error {
	return c.tapOwn(group, true, func() error { return c.subscribe(ctx, group) }) // tells the name clients (client_name_tap.go)
}

// subscribe is Subscribe, unknown to the name clients (they call it).
func (c *Conn) subscribe(ctx context.Context, group string) error {
	if err := c.busCall(ctx, pb.BusSubscribe, &pb.BusGroup{Group: group}, nil); err != nil {
		return err
	}
	c.rc.held.group(group, true)
	return nil
}

// SubscribeWithMembers joins group and returns its members (this client
// included), atomically: every later change of the group's membership
// comes to this client as a notice (EventNotice, To: the group), none
// missed and none already reflected in the list.
func (c *Conn) SubscribeWithMembers(ctx context.Context, group string) ([]Member, error) {
	var l pb.MemberList
	err := c.tapOwn(group, true, func() error { return c.busCall(ctx, pb.BusSubscribeWithMembers, &pb.BusGroup{Group: group}, &l) })
	if err != nil {
		return nil, err
	}
	c.rc.held.group(group, true)
	return members(&l), nil
}

func members(l *pb.MemberList) []Member {
	out := make([]Member, 0, len(l.GetMembers()))
	for _, m := range l.GetMembers() {
		out = append(out, memberOf(m))
	}
	return out
}

// Unsubscribe leaves group. Leaving a group one is not in is harmless. A
// group a NameClient of this Conn still uses stays joined for it, but its
// events no longer reach this Conn's own.
func (c *Conn) Unsubscribe(ctx context.Context, group string) error {
	return c.tapOwn(group, false, func() error { return c.unsubscribe(ctx, group) }) // tells the name clients (client_name_tap.go)
}

// unsubscribe is Unsubscribe, unknown to the name clients (they call it).
func (c *Conn) unsubscribe(ctx context.Context, group string) error {
	if err := c.busCall(ctx, pb.BusUnsubscribe, &pb.BusName{Name: group}, nil); err != nil {
		return err
	}
	c.rc.held.group(group, false)
	return nil
}

// Own claims a well-known name. It returns true if this client owns it
// now; otherwise the client waits in the name's standby queue (at
// position, from 1) and becomes the owner when those before it go, which a
// NoticeNameAcquired event announces.
func (c *Conn) Own(ctx context.Context, name string) (primary bool, position int, err error) {
	var r pb.OwnReply
	if err := c.busCall(ctx, pb.BusOwn, &pb.BusName{Name: name}, &r); err != nil {
		return false, 0, err
	}
	c.rc.held.name(name, true)
	return r.GetPrimary(), int(r.GetPosition()), nil
}

// Disown gives up a name (the next standby becomes its owner), or a place
// in its queue.
func (c *Conn) Disown(ctx context.Context, name string) error {
	err := c.busCall(ctx, pb.BusRelease, &pb.BusName{Name: name}, nil)
	if err == nil {
		c.rc.held.name(name, false)
	}
	return err
}

// Members lists group's members, by connection id.
func (c *Conn) Members(ctx context.Context, group string) ([]Member, error) {
	var l pb.MemberList
	if err := c.busCall(ctx, pb.BusMembers, &pb.BusName{Name: group}, &l); err != nil {
		return nil, err
	}
	return members(&l), nil
}

// Groups lists the groups with members, by name (Published is not set).
func (c *Conn) Groups(ctx context.Context) ([]GroupInfo, error) {
	var l pb.GroupList
	if err := c.busCall(ctx, pb.BusGroups, nil, &l); err != nil {
		return nil, err
	}
	out := make([]GroupInfo, 0, len(l.GetGroups()))
	for _, g := range l.GetGroups() {
		out = append(out, GroupInfo{Name: g.GetName(), Members: int(g.GetMembers())})
	}
	return out, nil
}

// Names lists the owned well-known names, by name.
func (c *Conn) Names(ctx context.Context) ([]NameInfo, error) {
	var l pb.NameList
	if err := c.busCall(ctx, pb.BusNames, nil, &l); err != nil {
		return nil, err
	}
	out := make([]NameInfo, 0, len(l.GetNames()))
	for _, n := range l.GetNames() {
		out = append(out, NameInfo{Name: n.GetName(), Owner: n.GetOwner(), Standby: n.GetStandby()})
	}
	return out, nil
}

// Connections lists the node's connections, by id (RingBytes, Replies,
// Violations and Panics are not set).
func (c *Conn) Connections(ctx context.Context) ([]ConnInfo, error) {
	var l pb.ConnectionList
	if err := c.busCall(ctx, pb.BusConnections, nil, &l); err != nil {
		return nil, err
	}
	out := make([]ConnInfo, 0, len(l.GetConnections()))
	for _, ci := range l.GetConnections() {
		m := memberOf(ci.GetMember())
		out = append(out, ConnInfo{Address: m.Address, Name: m.ClientName, Cred: m.Cred, Transport: ci.GetTransport(),
			Since: time.Unix(0, ci.GetSinceUnixNano()), Groups: ci.GetGroups(), Names: ci.GetNames(),
			Calls: ci.GetCalls(), Sends: ci.GetSends(), Events: ci.GetEvents(), Dropped: ci.GetDropped(),
			BytesIn: ci.GetBytesIn(), BytesOut: ci.GetBytesOut(), Pending: int(ci.GetPending()),
			RequestFill: int(ci.GetRequestFill()), ResponseFill: int(ci.GetResponseFill()), EventFill: int(ci.GetEventFill()),
			EventsQueued: int(ci.GetEventsQueued())})
	}
	return out, nil
}

// Monitor makes this client a monitor of the bus (a privileged action:
// the node's policy decides, ActionMonitor): from its return, a copy of
// every message, publication and request between other clients that comes
// from or goes to one of targets (addresses, names, groups; all traffic if
// none) arrives as an event of kind EventMonitor, From and To set and
// Monitored saying what it was. Replies are not copied. A monitor that
// does not keep up loses copies, counted in Event.Dropped like any
// event; it never slows the bus. A second call replaces the targets.
func (c *Conn) Monitor(ctx context.Context, targets ...string) error {
	return c.busCall(ctx, pb.BusMonitor, &pb.BusWatch{Targets: targets}, nil)
}

// busIntercept decodes a bus event in place; it reports true if the event
// was taken (a request for the request handler, or a malformed message,
// dropped and counted).
func (c *Conn) busIntercept(e *Event) bool {
	if e.Command == pb.MsgCancel && c.peerCtx { // never an event: a request's caller stopped waiting
		if !c.peerCanceled(e.Payload) {
			c.dropped.Add(1)
		}
		e.Release()
		return true
	}
	if e.Command == pb.MsgDirectStart && c.dir != nil { // never an event (client_direct_io.go)
		c.directStarted(e.Payload)
		e.Release()
		return true
	}
	request := e.Command == pb.MsgRequest
	var from, to, handle, payload []byte
	var micros uint32 // a request's deadline
	var err error
	if request && c.peerCtx {
		from, to, handle, micros, payload, err = pb.DecodeRequest(e.Payload)
	} else {
		from, to, handle, payload, err = pb.DecodeMsg(e.Payload, request)
	}
	monitored := e.Command >= pb.MsgMonitor+pb.KindPeerSend && e.Command <= pb.MsgMonitor+pb.KindGroupCall
	if monitored {
		request = false
		from, to, handle, payload, err = pb.DecodeMsg(e.Payload, false)
	}
	if err != nil || !monitored && (e.Command < pb.MsgDirect || e.Command > pb.MsgNotice) {
		c.dropped.Add(1)
		return true
	}
	if c.dir != nil && !monitored {
		c.directFence(from) // what the sender wrote on a channel to this client came first
	}
	e.From, e.To = c.internPair(from, to)
	e.Payload = payload
	if monitored {
		e.Kind = EventMonitor
		e.Monitored = map[uint16]EventKind{pb.KindPeerSend: EventMessage, pb.KindPublish: EventGroup,
			pb.KindPeerCall: EventRequest, pb.KindGroupCall: EventRequest}[e.Command-pb.MsgMonitor]
		return false
	}
	if (e.Command == pb.MsgGroup || e.Command == pb.MsgNotice) && c.tapped(e) { // a name client's (client_name_tap.go)
		e.Release()
		return true
	}
	switch e.Command {
	case pb.MsgDirect:
		e.Kind = EventMessage
		if c.drainMarked(e, false) { // Drain's marker: never queued
			e.Release()
			return true
		}
	case pb.MsgGroup:
		e.Kind = EventGroup
	case pb.MsgNotice:
		e.Kind = EventNotice
	case pb.MsgRequest:
		e.Kind = EventRequest
		e.rc = c
		copy(e.handle[:], handle)
		if c.o.inline && c.o.onRequest != nil && c.bridge == nil {
			c.serveInline(&PeerRequest{From: e.From, To: e.To, Payload: payload, c: c, handle: e.handle}, micros)
			e.Release()
			return true
		}
		if c.o.onRequest != nil || c.o.requestPID != nil {
			r := c.newRequest(e.From, e.To, e.handle, micros, append([]byte(nil), payload...))
			e.Release()
			c.queueRequest(r)
			return true
		}
	}
	return false
}

// internPair returns a message's sender and destination as strings,
// without allocating when they are among the last few seen (a subscriber
// hears the same senders and groups over and over), under one lock. Only
// the goroutine that holds evmu, or the socket reader, calls it; the cache
// has its own lock for the two of them.
func (c *Conn) internPair(from, to []byte) (string, string) {
	c.internMu.Lock()
	defer c.internMu.Unlock()
	return c.internLocked(from), c.internLocked(to)
}

func (c *Conn) internLocked(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	for i := range c.interned {
		if c.interned[i] == string(b) {
			return c.interned[i]
		}
	}
	s := string(b)
	c.interned[c.internNext%len(c.interned)] = s
	c.internNext++
	return s
}
