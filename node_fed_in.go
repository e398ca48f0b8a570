package switchboard

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/group"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Deliver takes one message from node (FederationHost). Everything in it
// is untrusted: a message that does not decode or does not make sense is
// dropped and counted (FederationStats.Malformed), one of a kind this node
// does not know is ignored and counted (Unknown), and nothing in it may
// crash or stop the node.
func (fs *fedState) Deliver(node string, msg []byte) {
	fs.received.Add(1)
	defer fs.recoverMessage(node)
	var m pb.FedMessage
	if err := gproto.Unmarshal(msg, &m); err != nil {
		fs.bad(node, "undecodable: "+err.Error())
		return
	}
	switch b := m.Body.(type) {
	case *pb.FedMessage_State:
		fs.changes(node, func(p *fedPeer) {
			for _, c := range b.State.GetConns() {
				fs.connUp(p, c)
			}
			p.stated = true
		})
		fs.namesStated(node)
	case *pb.FedMessage_ConnUp:
		fs.changes(node, func(p *fedPeer) { fs.connUp(p, b.ConnUp) })
	case *pb.FedMessage_ConnDown:
		fs.changes(node, func(p *fedPeer) {
			d := b.ConnDown
			fc := p.conns[d.GetId()]
			if fc == nil {
				fs.bad(node, "conn_down: unknown connection")
				return
			}
			why := d.GetReason()
			if _, ok := pb.DisconnectReason_name[int32(why)]; !ok {
				why = pb.DisconnectReason_DISCONNECT_UNSPECIFIED
			}
			fs.connGone(p, fc, why, clip(d.GetDetail()))
		})
	case *pb.FedMessage_Join, *pb.FedMessage_Leave:
		ms, joined := m.GetJoin(), true
		if ms == nil {
			ms, joined = m.GetLeave(), false
		}
		fs.changes(node, func(p *fedPeer) {
			fc := p.conns[ms.GetId()]
			g := ms.GetGroup()
			switch {
			case fc == nil:
				fs.bad(node, "membership of an unknown connection")
			case checkName(g) != nil || reserved(g):
				fs.bad(node, "membership of a bad group")
			case joined && len(fc.groups) >= fedMaxGroups:
				fs.bad(node, "too many groups for one connection")
			case joined:
				fs.join(p, fc, g)
			default:
				fs.leave(p, fc, g, pb.DisconnectReason_DISCONNECT_UNSPECIFIED)
			}
		})
	case *pb.FedMessage_Direct:
		fs.direct(node, b.Direct)
	case *pb.FedMessage_Publish:
		var ob conn.Outbox
		fs.publishIn(node, b.Publish.GetFrom(), b.Publish.GetGroup(), b.Publish.GetPayload(), &ob)
		ob.Flush()
	case *pb.FedMessage_Request:
		fs.requestIn(node, b.Request)
	case *pb.FedMessage_Reply:
		fs.replyIn(node, b.Reply)
	case *pb.FedMessage_Cancel:
		fs.cancelIn(node, b.Cancel)
	case *pb.FedMessage_Claims:
		fs.claimsIn(node, b.Claims)
	case *pb.FedMessage_NameOwner:
		fs.nameOwnerIn(node, b.NameOwner)
	case *pb.FedMessage_NamesResync:
		fs.namesResyncIn(node, b.NamesResync)
	case *pb.FedMessage_ClaimsAsk:
		fs.claimsAskIn(node, b.ClaimsAsk)
	default: // a newer node's kind (or none): skew, not an error
		fs.unknown.Add(1)
	}
}

// recoverMessage, deferred by what handles one message from node, turns a
// panic (our bug, on another node's input) into that message's loss,
// counted apart (Panics) and logged.
func (fs *fedState) recoverMessage(node string) {
	if v := recover(); v != nil {
		fs.panics.Add(1)
		if ok, skipped := fs.log.allow(time.Now()); ok {
			fs.n.o.logger.Error("federation: panic on a message", slog.String("node", node), slog.Any("panic", v),
				slog.Uint64("not_logged", skipped))
		}
	}
}

// changes runs f on node's state, under mu.
func (fs *fedState) changes(node string, f func(p *fedPeer)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p := fs.peers[node]
	if p == nil {
		fs.bad(node, "a message from a node that is not up")
		return
	}
	f(p)
}

// connUp enters a remote connection and announces it; mu held.
func (fs *fedState) connUp(p *fedPeer, c *pb.FedConn) {
	id := c.GetId()
	switch {
	case id == 0 || id >= 1<<63:
		fs.bad(p.name, "connection with a bad id")
		return
	case p.conns[id] != nil:
		fs.bad(p.name, "connection announced twice")
		return
	case len(p.conns) >= fedMaxConns:
		fs.bad(p.name, "too many connections")
		return
	case len(c.GetGroups()) > fedMaxGroups:
		fs.bad(p.name, "too many groups for one connection")
		return
	}
	addr := p.prefix + strconv.FormatUint(id, 10)
	fc := &fedConn{id: id, addr: addr, groups: map[string]bool{},
		cred:   Cred{UID: c.GetUid(), GID: c.GetGid(), PID: c.GetPid(), Node: p.name},
		member: &pb.Member{Address: addr, ClientName: clip(c.GetClientName()), Uid: c.GetUid(), Gid: c.GetGid(), Pid: c.GetPid(), Node: p.name}}
	p.conns[id] = fc
	fs.n.notifyLocal(pb.GroupConnections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_CONNECTED, Member: fc.member})
	for _, g := range c.GetGroups() {
		if checkName(g) != nil || reserved(g) {
			fs.bad(p.name, "membership of a bad group")
			continue
		}
		fs.join(p, fc, g)
	}
}

// sender finds the remote connection a message comes from, under mu
// (read); nil (counted) if node is not up or does not have it.
func (fs *fedState) sender(node string, from uint64) (*fedPeer, *fedConn) {
	p := fs.peers[node]
	if p == nil {
		fs.bad(node, "a message from a node that is not up")
		return nil, nil
	}
	fc := p.conns[from]
	if fc == nil {
		fs.bad(node, "a message from an unknown connection")
		return nil, nil
	}
	return p, fc
}

// local finds the live local connection id, or nil.
func (fs *fedState) local(id uint64) *conn.Endpoint {
	to := fs.n.reg.Lookup(id)
	if to == nil || to.Context().Err() != nil {
		return nil
	}
	return to
}

func (fs *fedState) allow(fc *fedConn, what Action, target string) bool {
	if err := fs.n.allow(fc.cred, what, target); err != nil {
		fs.refused.Add(1)
		return false
	}
	return true
}

// allowName asks the policy whether fc may send to the well-known name
// it addressed (a message or request to a name owned here travels to the
// owner's address, with the name beside it), as resolve does for a local
// sender before the owner's address; "" (sent to the address) passes. A
// bad name is malformed: refused, and counted.
func (fs *fedState) allowName(node string, fc *fedConn, name string) bool {
	if name == "" {
		return true
	}
	if checkName(name) != nil {
		fs.bad(node, "a message to a bad name")
		return false
	}
	return fs.allow(fc, ActionSend, name)
}

// direct delivers a remote connection's message to a local one; one that
// wants an answer gets it (the count delivered, or why not).
func (fs *fedState) direct(node string, d *pb.FedDirect) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	p, fc := fs.sender(node, d.GetFrom())
	if fc == nil {
		return
	}
	answer := func(code pb.Code, text string, payload []byte) {
		if d.GetRid() == 0 {
			return
		}
		if payload == nil {
			payload = []byte(text)
		}
		fs.sendLocked(p, encode(&pb.FedMessage{Body: &pb.FedMessage_Reply{Reply: &pb.FedReply{Rid: d.GetRid(), Code: code, Payload: payload}}}))
	}
	dest := fs.n.addrPrefix + strconv.FormatUint(d.GetTo(), 10)
	if !fs.allowName(node, fc, d.GetName()) {
		answer(pb.Code_CODE_REFUSED, fmt.Sprintf("%s may not send to %s", fc.addr, d.GetName()), nil)
		return
	}
	if !fs.allow(fc, ActionSend, dest) {
		answer(pb.Code_CODE_REFUSED, fmt.Sprintf("%s may not send to %s", fc.addr, dest), nil)
		return
	}
	to := fs.local(d.GetTo())
	if to == nil {
		fs.n.undeliverable.Add(1)
		answer(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("nobody at %q", dest), nil)
		return
	}
	body := pb.AppendMsg(nil, fc.addr, dest, nil, d.GetPayload())
	if len(body) > to.MaxEvent() {
		to.CountDrop()
		answer(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes: more than %s takes (%d)", len(body), dest, to.MaxEvent()), nil)
		return
	}
	fs.n.delivered.Add(1)
	fs.n.fedMonitor(fc.addr, pb.KindPeerSend, dest, to, d.GetPayload())
	to.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgDirect, Payload: body}})
	answer(pb.Code_CODE_OK, "", binary.LittleEndian.AppendUint32(nil, 1))
}

// publishIn hands a remote publication to this node's members of its
// group, gathered in ob (the caller flushes it).
func (fs *fedState) publishIn(node string, from uint64, g string, payload []byte, ob *conn.Outbox) {
	var run fedPubRun
	fs.publishRun(&run, node, from, g, payload, ob)
}

// fedPubRun is what publishRun looked up for the last publication of a
// pass, kept for the next ones of the same run (same sender, same group:
// a burst): the sender and the group's members here are taken once per
// run (the policy is asked for each). The sender's own comings and goings
// arrive on the same link, in order, and end the run (DeliverBatch); a
// member joining or leaving here meanwhile shows from the next run, as if
// the run had come a moment earlier.
type fedPubRun struct {
	ok      bool // the fields below are the last publication's
	from    uint64
	g       string
	fc      *fedConn
	members []*conn.Endpoint
	h       *group.Handle
}

// publishRun is publishIn within a run (run: the last publication's
// lookups, which it takes if from and g are the same, and else makes
// anew).
func (fs *fedState) publishRun(run *fedPubRun, node string, from uint64, g string, payload []byte, ob *conn.Outbox) {
	if !run.ok || run.from != from || run.g != g {
		*run = fedPubRun{}
		fs.mu.RLock()
		_, fc := fs.sender(node, from)
		fs.mu.RUnlock()
		if fc == nil {
			return
		}
		if checkName(g) != nil || reserved(g) {
			fs.bad(node, "publication to a bad group")
			return
		}
		members, h := fs.n.reg.Groups().Lookup(g)
		*run = fedPubRun{ok: true, from: from, g: g, fc: fc, members: members, h: h}
	}
	fc, members := run.fc, run.members
	if !fs.allow(fc, ActionPublish, g) { // every time, as for a local sender: a policy may count
		return
	}
	if run.h != nil {
		run.h.Published.Add(1)
	}
	if len(members) == 0 { // they left meanwhile
		fs.n.undeliverable.Add(1)
		return
	}
	fs.n.fedMonitor(fc.addr, pb.KindPublish, g, nil, payload)
	var d *conn.Delivery // one for every member
	if len(payload) >= fedCopyMin {
		// The payload is this node's own (FederationHost): the event is
		// its prefix and the payload as they are, never joined.
		d = conn.KeptParts(pb.BusService, pb.MsgGroup, pb.AppendMsg(nil, fc.addr, g, nil, nil), payload)
	} else {
		d = &conn.Delivery{Service: pb.BusService, Command: pb.MsgGroup, Payload: pb.AppendMsg(nil, fc.addr, g, nil, payload)}
	}
	size := d.Size()
	for _, t := range members {
		if size > t.MaxEvent() {
			t.CountDrop()
			continue
		}
		fs.n.delivered.Add(1)
		ob.Add(t, d)
	}
}

// requestIn delivers a remote request to a local connection; its answer
// goes back through the node's stand-in for the caller (fedCaller).
func (fs *fedState) requestIn(node string, r *pb.FedRequest) {
	fs.mu.RLock()
	p, fc := fs.sender(node, r.GetFrom())
	fs.mu.RUnlock()
	if fc == nil {
		return
	}
	rid := r.GetRid()
	fail := func(code pb.Code, text string) {
		fs.send(p, &pb.FedMessage{Body: &pb.FedMessage_Reply{Reply: &pb.FedReply{Rid: rid, Code: code, Payload: []byte(text)}}})
	}
	addr := fs.n.addrPrefix + strconv.FormatUint(r.GetTo(), 10)
	dest := r.GetDest()
	what := ActionSend
	if dest != addr { // a group request: dest is the group
		if checkName(dest) != nil || reserved(dest) || r.GetName() != "" {
			fs.bad(node, "request to a bad group")
			fail(pb.Code_CODE_INVALID_ARGUMENT, "bad group")
			return
		}
		what = ActionPublish
	}
	if what == ActionSend && !fs.allowName(node, fc, r.GetName()) {
		fail(pb.Code_CODE_REFUSED, fmt.Sprintf("%s may not send to %s", fc.addr, r.GetName()))
		return
	}
	if !fs.allow(fc, what, dest) {
		fail(pb.Code_CODE_REFUSED, fmt.Sprintf("%s may not send to %s", fc.addr, dest))
		return
	}
	to := fs.local(r.GetTo())
	if to == nil {
		fs.n.undeliverable.Add(1)
		fail(pb.Code_CODE_PEER_GONE, addr+" disconnected")
		return
	}
	if what == ActionPublish && !slices.Contains(fs.n.reg.Groups().Members(dest), to) {
		// Not a member of the group it is asked as: the group's label
		// would carry it past the policy's word on its address.
		fs.n.undeliverable.Add(1)
		fs.notMember.Add(1)
		fail(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("%s is not a member of %s", addr, dest))
		return
	}
	p.inMu.Lock()
	if _, dup := p.in[rid]; dup {
		p.inMu.Unlock()
		fs.bad(node, "request id reused while in flight")
		return
	}
	if len(p.in) >= fs.maxInFlight {
		p.inMu.Unlock()
		fs.overLimit(node, "too many requests in flight")
		fail(pb.Code_CODE_TOO_MANY_PENDING, fmt.Sprintf("%d requests from node %s in flight here", fs.maxInFlight, node))
		return
	}
	p.in[rid] = to
	p.inMu.Unlock()
	// Not under mu: a drop answers through fedCaller.PostResult, which
	// takes it.
	body := pb.AppendRequest(nil, fc.addr, dest, conn.ReplyHandleOf(p.caller, rid), r.GetDeadlineUs(), r.GetPayload())
	if code, text := to.DeliverRequest(p.caller, rid, body); code != pb.Code_CODE_OK {
		p.inMu.Lock()
		delete(p.in, rid)
		p.inMu.Unlock()
		fail(code, text)
		return
	}
	fs.n.delivered.Add(1)
	kind := pb.KindPeerCall
	if what == ActionPublish {
		kind = pb.KindGroupCall
	}
	fs.n.fedMonitor(fc.addr, kind, dest, to, r.GetPayload())
}

// fedMonitor gives this node's monitors watching from, dest or to a copy
// of a message from another node, as copyToMonitors does for a local
// sender's.
func (n *Node) fedMonitor(from string, kind uint16, dest string, to *conn.Endpoint, payload []byte) {
	p := n.monitors.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	var body []byte
	for _, m := range *p {
		if m.targets != nil && !m.targets[from] && !m.targets[dest] && (to == nil || !m.targets[to.Address()]) {
			continue
		}
		if body == nil {
			body = pb.AppendMsg(nil, from, dest, nil, payload)
		}
		if len(body) > m.c.MaxEvent() {
			m.c.CountDrop()
			continue
		}
		m.c.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgMonitor + kind, Payload: body}})
	}
}

// replyIn completes one of this node's requests to a remote connection.
func (fs *fedState) replyIn(node string, r *pb.FedReply) {
	p := fs.peer(node)
	if p == nil {
		fs.bad(node, "a message from a node that is not up")
		return
	}
	fs.pmu.Lock()
	pd := fs.pending[r.GetRid()]
	if pd == nil || pd.peer != p { // answered, cancelled, or another node's
		fs.pmu.Unlock()
		fs.late.Add(1)
		return
	}
	delete(fs.pending, r.GetRid())
	fs.pmu.Unlock()
	pd.caller.PostResultNow(&conn.PeerResult{CallID: pd.call, From: pd.key, Code: fedCode(r.GetCode()), Payload: r.GetPayload()})
}

// cancelIn: a remote caller stopped waiting.
func (fs *fedState) cancelIn(node string, c *pb.FedCancel) {
	p := fs.peer(node)
	if p == nil {
		fs.bad(node, "a message from a node that is not up")
		return
	}
	p.inMu.Lock()
	to := p.in[c.GetRid()]
	delete(p.in, c.GetRid())
	p.inMu.Unlock()
	if to == nil {
		return // answered already
	}
	why := c.GetCode()
	if why != pb.Code_CODE_DEADLINE_EXCEEDED && why != pb.Code_CODE_CANCELED {
		why = pb.Code_CODE_PEER_GONE
	}
	to.ForgetRequest(p.caller, c.GetRid(), why)
}

// fedCode keeps the codes a remote answer may carry; anything else is the
// answering handler's error.
func fedCode(c pb.Code) pb.Code {
	switch c {
	case pb.Code_CODE_UNDELIVERABLE, pb.Code_CODE_PEER_GONE, pb.Code_CODE_REFUSED, pb.Code_CODE_TOO_MANY_PENDING:
		return c
	}
	return pb.PeerCode(c)
}

// clip bounds a text from another node.
func clip(s string) string {
	if len(s) > pb.MaxNameLen {
		return s[:pb.MaxNameLen]
	}
	return s
}

// fedCaller stands for a remote node's connections as callers of requests
// delivered here (conn.Caller): the handle a client quotes is (its id,
// the rid), and an answer goes back across the link.
type fedCaller struct {
	fs *fedState
	p  *fedPeer
	id uint64
}

func (c *fedCaller) ID() uint64 { return c.id }

// PostResult sends an answer back, once per rid.
func (c *fedCaller) PostResult(r *conn.PeerResult) {
	c.p.inMu.Lock()
	_, ok := c.p.in[r.CallID]
	delete(c.p.in, r.CallID)
	c.p.inMu.Unlock()
	if !ok {
		c.fs.late.Add(1)
		return
	}
	c.fs.send(c.p, &pb.FedMessage{Body: &pb.FedMessage_Reply{Reply: &pb.FedReply{Rid: r.CallID, Code: r.Code, Payload: r.Payload}}})
}
