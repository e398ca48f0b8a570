package conn

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// BusFrame is a bus frame from the client, reassembled from its chunks.
type BusFrame struct {
	Kind, Flags uint16
	ID          uint64
	Aux         uint32
	Body        []byte // valid until Route returns, unless Owned
	Owned       bool
}

// PeerResult is a peer's answer to one of this connection's requests (or
// the node's verdict that none will come).
type PeerResult struct {
	CallID  uint64
	From    uint64 // the answering connection's id
	Code    pb.Code
	Payload []byte
}

// callExpired ends a request to peers at its deadline, or when the client
// cancels it.
type callExpired struct {
	id       uint64
	canceled bool
}

// eventBatch is several events for one connection, sent as one actor
// message: a publisher's pump sends one per destination per batch of
// frames it reads. A Delivery in it may be shared with other connections
// (a group's members get the same one): the receiving pump writes each
// from a copy, and queues only copies (queueShared).
type eventBatch struct {
	evs   []*Delivery
	bytes int64
}

type handle struct{ caller, call uint64 }

// busState is a connection's part of the bus: the requests it waits for
// (owned by the pump), the requests it was sent (under inMu, since other
// connections' pumps add to it), and its outbox.
type busState struct {
	pending  int // replies from peers it waits for
	calls    map[uint64]*peerCall
	inMu     sync.Mutex
	incoming map[handle]Caller // requests delivered to this client, by handle, with their caller
	inClosed bool
	out      Outbox     // this batch's events for other connections
	lastDest string     // the destination of the last bus frame routed (DestName)
	shared   []Delivery // SharedDelivery's current array
}

// peerCall is one request of this connection to one peer or a group.
type peerCall struct {
	targets []*Endpoint // whose incoming tables hold its handle
	remotes []Remote    // targets on other nodes asked
	group   bool
	left    int // replies still expected
	timer   *time.Timer
	slots   map[uint64]int // group: member id → index in results
	results []*pb.GroupResult
	start   time.Time // set when Config.ObservePeer is
}

// Expect records that this connection's client will be asked call of
// caller, and reports false if the connection is ending (the caller then
// knows at once that no answer will come). Any goroutine may call it.
func (c *Endpoint) expect(caller Caller, call uint64) bool {
	c.bus.inMu.Lock()
	defer c.bus.inMu.Unlock()
	if c.bus.inClosed {
		return false
	}
	if c.bus.incoming == nil {
		c.bus.incoming = map[handle]Caller{}
	}
	c.bus.incoming[handle{caller.ID(), call}] = caller
	return true
}

// requestDropped tells the caller of a request that this connection's
// queue could not take it: a request is never dropped silently; nor is a
// marker (Delivery.OnDrop). Every path that drops a Delivery calls it.
func (c *Endpoint) requestDropped(e *Delivery) {
	if f := e.OnDrop; f != nil {
		e.OnDrop = nil
		f()
	}
	if e.caller == nil {
		return
	}
	h := handle{e.caller.ID(), e.callID}
	c.bus.inMu.Lock()
	_, ok := c.bus.incoming[h]
	delete(c.bus.incoming, h)
	c.bus.inMu.Unlock()
	if ok {
		e.caller.PostResult(&PeerResult{CallID: e.callID, From: c.ID(), Code: pb.Code_CODE_UNDELIVERABLE,
			Payload: []byte(c.Address() + " is not reading: its queue is full")})
	}
}

// forgetIncoming drops the handle of a request its caller no longer waits
// for, and tells the client, if it takes MsgCancel and has not answered
// yet, why (CODE_CANCELED, CODE_DEADLINE_EXCEEDED, CODE_PEER_GONE): its
// answer, if one comes, is then late (Stats.LateReplies). Any goroutine
// may call it.
func (c *Endpoint) forgetIncoming(caller Caller, call uint64, why pb.Code) {
	h := handle{caller.ID(), call}
	c.bus.inMu.Lock()
	_, waiting := c.bus.incoming[h]
	delete(c.bus.incoming, h)
	c.bus.inMu.Unlock()
	if waiting && c.cfg.PeerContext {
		// Past the mailbox's bound (SendEvent's): there is at most one per
		// request delivered, and the client must hear it. Sent after the
		// request (by the caller's pump, as the request was), it arrives
		// after it.
		body := pb.AppendCancel(make([]byte, 0, pb.CancelSize), replyHandle(caller.ID(), call), why)
		c.sys.Root.Send(c.pid, &Delivery{Service: pb.BusService, Command: pb.MsgCancel, Payload: body})
	}
}

// failIncoming, at release, tells every caller still waiting for this
// client that it is gone.
func (c *Endpoint) failIncoming() {
	c.bus.inMu.Lock()
	in := c.bus.incoming
	c.bus.incoming, c.bus.inClosed = nil, true
	c.bus.inMu.Unlock()
	for h, caller := range in {
		caller.PostResult(&PeerResult{CallID: h.call, From: c.ID(), Code: pb.Code_CODE_PEER_GONE, Payload: []byte(c.Address() + " disconnected")})
	}
}

// CountDrop counts an event dropped for this client before it reached the
// connection; the client sees it in the next event's gap. Any goroutine
// may call it.
func (c *Endpoint) CountDrop() { c.lateDrops.Add(1) }

// MaxEvent returns the largest bus message body (prefix included) the
// client takes: its negotiated maximum plus the prefix, and no more than
// its event ring and queue can hold at once (a larger one would always be
// dropped).
func (c *Endpoint) MaxEvent() int {
	over := pb.MsgOverheadNoDeadline
	if c.cfg.PeerContext {
		over = pb.MaxMsgOverhead
	}
	return min(c.cfg.MaxMessage+over, c.cfg.EventBytes+c.ringCap[2])
}

// Waiting returns how many replies from peers the connection waits for.
// Any goroutine may call it (the count may be a moment old).
func (c *Endpoint) Waiting() int { return int(c.pendingGauge.Load()) }

// PostResult delivers a peer's answer to this connection's actor. Any
// goroutine may call it.
func (c *Endpoint) PostResult(r *PeerResult) { c.sys.Root.Send(c.pid, r) }

// Deliver queues ev for dst's client. One Delivery may go to several
// destinations (every member of a group: one allocation for all of them):
// nobody changes it once given (the destinations write and queue copies),
// but for OnDrop, which only an event for one destination may have. On
// this connection's pump only (from Route): the events go out when the
// pump has read its batch of frames, one actor message per destination,
// in the order Deliver was called.
func (c *Endpoint) Deliver(dst *Endpoint, ev *Delivery) { c.bus.out.Add(dst, ev) }

func (c *Endpoint) flushOutbox() { c.bus.out.Flush() }

// saturated reports whether the connection's mailbox holds as many events
// as SendEvent and SendEvents let in.
func (c *Endpoint) saturated() bool {
	return c.inbox.Load() >= c.mailboxLimit
}

// SendEvents queues events for the client, as one actor message, with the
// bounds of SendEvent. Any goroutine may call it; it never blocks. The
// slice becomes the connection's: the caller must not use it again. The
// events (and their payloads) may be shared with other connections, and
// must not change once given (see Deliver).
func (c *Endpoint) SendEvents(evs []*Delivery) {
	var bytes int64
	for _, e := range evs {
		bytes += int64(e.size())
	}
	if !c.admit(int64(len(evs)), bytes) {
		// Keep what fits: drop from the end of the batch.
		keep := 0
		var kb int64
		for _, e := range evs {
			if !c.admit(1, int64(e.size())) {
				break
			}
			keep++
			kb += int64(e.size())
		}
		c.lateDrops.Add(uint64(len(evs) - keep))
		for _, e := range evs[keep:] {
			c.requestDropped(e)
		}
		evs, bytes = evs[:keep], kb
		if keep == 0 {
			return
		}
	}
	c.sys.Root.Send(c.pid, &eventBatch{evs: evs, bytes: bytes})
}

// SharedDelivery returns a copy of d for Deliver to give to several
// destinations (a group's members), from an array of 16 the pump fills
// before it makes the next: one allocation per 16 publications, not per
// publication. The array lives until every destination wrote its events.
// On the pump only (from Route).
func (c *Endpoint) SharedDelivery(d Delivery) *Delivery {
	if len(c.bus.shared) == cap(c.bus.shared) {
		c.bus.shared = make([]Delivery, 0, 16)
	}
	c.bus.shared = append(c.bus.shared, d)
	return &c.bus.shared[len(c.bus.shared)-1]
}

// DestName returns a bus frame's destination as a string, without
// allocating when it is the previous frame's (a publisher sends to the
// same group again and again). On the pump only (from Route).
func (c *Endpoint) DestName(b []byte) string {
	if string(b) != c.bus.lastDest {
		c.bus.lastDest = string(b)
	}
	return c.bus.lastDest
}

// busFrame hands a bus frame to Route; false means the connection broke
// the protocol.
func (c *Endpoint) busFrame(f BusFrame) bool {
	if f.Kind == pb.KindPeerReply {
		return c.peerReply(f)
	}
	defer func() {
		if v := recover(); v != nil { // the node's own bug (a policy that panics, say): this message fails
			c.stats.Panics.Add(1)
			c.cfg.Logger.Error("routing panic", slog.Uint64("conn", c.cfg.ID), slog.Any("panic", v))
			if f.Flags&pb.FlagWantAnswer != 0 || f.Kind == pb.KindPeerCall || f.Kind == pb.KindGroupCall {
				c.Fail(f.ID, pb.Code_CODE_INTERNAL, "routing failed")
			}
		}
	}()
	if f.Kind == pb.KindPeerCall || f.Kind == pb.KindGroupCall {
		c.asked = true
	}
	c.cfg.Host.Route(c, f)
	return !c.stopping
}

// peerReply routes the client's answer to a request back to its caller.
func (c *Endpoint) peerReply(f BusFrame) bool {
	if len(f.Body) < pb.ReplyHandleSize {
		c.violation("peer reply without its handle")
		return false
	}
	h := handle{binary.LittleEndian.Uint64(f.Body), binary.LittleEndian.Uint64(f.Body[8:])}
	c.bus.inMu.Lock()
	caller := c.bus.incoming[h]
	delete(c.bus.incoming, h)
	c.bus.inMu.Unlock()
	if caller == nil {
		c.countLate() // its caller gave up, or a handle the client made up
		return true
	}
	payload := f.Body[pb.ReplyHandleSize:]
	if !f.Owned {
		payload = append([]byte(nil), payload...)
	}
	code := pb.PeerCode(pb.Code(f.Aux))
	c.asked = true
	caller.PostResult(&PeerResult{CallID: h.call, From: c.ID(), Code: code, Payload: payload})
	return true
}

// ReplyHandle returns the handle of call of this connection, as the
// request's recipient must quote it.
func (c *Endpoint) ReplyHandle(call uint64) []byte { return replyHandle(c.ID(), call) }

func replyHandle(caller, call uint64) []byte {
	var b [pb.ReplyHandleSize]byte
	binary.LittleEndian.PutUint64(b[:], caller)
	binary.LittleEndian.PutUint64(b[8:], call)
	return b[:]
}

// Fail answers the client's call id with an error at once (a bus
// operation refused, a request nobody can take). On the pump, from Route.
func (c *Endpoint) Fail(id uint64, code pb.Code, text string) {
	c.writeReply(id, Result{Code: code, Payload: []byte(text)})
}

// Answer answers the client's call id with payload. On the pump.
func (c *Endpoint) Answer(id uint64, payload []byte) {
	c.writeReply(id, Result{Payload: payload})
}

// StartRequest sends the client's request id to targets (one peer, or the
// members of a group), built for each by body (the event body, shared, as
// pb.AppendRequest makes it; a target without PeerContext gets a copy
// without the deadline), and arranges for the answers: one peer's answer
// is the reply; a group's answers are gathered into one GroupReply, in the
// order of targets, with CODE_PEER_GONE for a member that leaves and
// CODE_DEADLINE_EXCEEDED for one that has not answered by the deadline
// (aux microseconds; 0: none). On the pump, from Route.
func (c *Endpoint) StartRequest(id uint64, aux uint32, group bool, targets []*Endpoint, body []byte) {
	c.StartRequestRemote(id, aux, group, targets, nil, body)
}

// StartRequestRemote is StartRequest with targets on other nodes too
// (remotes, asked after targets; a group's results list them after the
// local ones). On the pump, from Route.
func (c *Endpoint) StartRequestRemote(id uint64, aux uint32, group bool, targets []*Endpoint, remotes []Remote, body []byte) {
	max := c.cfg.MaxPending
	if max <= 0 {
		max = 4096
	}
	if c.bus.pending+len(targets)+len(remotes) > max {
		c.Fail(id, pb.Code_CODE_TOO_MANY_PENDING, "too many requests waiting for replies")
		return
	}
	if c.bus.calls == nil {
		c.bus.calls = map[uint64]*peerCall{}
	}
	if _, dup := c.bus.calls[id]; dup {
		c.violation("request id reused while in flight")
		return
	}
	if c.takeCanceled(id) { // its Cancel overtook it: the client no longer waits
		return
	}
	var noDeadline []byte // body for targets without PeerContext, made once, before any target is told
	for _, t := range targets {
		if !t.cfg.PeerContext {
			var err error
			if noDeadline, err = pb.WithoutDeadline(body); err != nil {
				c.Fail(id, pb.Code_CODE_INTERNAL, "bad request body")
				return
			}
			break
		}
	}
	pc := &peerCall{group: group}
	if c.cfg.ObservePeer != nil {
		pc.start = time.Now()
	}
	if group {
		pc.slots = make(map[uint64]int, len(targets)+len(remotes))
		pc.results = make([]*pb.GroupResult, len(targets)+len(remotes))
	}
	for i, t := range targets {
		if group {
			pc.slots[t.ID()] = i
			pc.results[i] = &pb.GroupResult{Address: t.Address(), Code: pb.Code_CODE_DEADLINE_EXCEEDED}
		}
		tbody := body
		if !t.cfg.PeerContext {
			tbody = noDeadline
		}
		if len(tbody) > t.MaxEvent() {
			text := fmt.Sprintf("%d bytes: more than %s takes (%d)", len(tbody), t.Address(), t.MaxEvent())
			if group {
				pc.results[i].Code, pc.results[i].Payload = pb.Code_CODE_TOO_LARGE, []byte(text)
				continue
			}
			c.Fail(id, pb.Code_CODE_TOO_LARGE, text)
			return
		}
		if !t.expect(c, id) {
			if group {
				pc.results[i].Code = pb.Code_CODE_PEER_GONE
				continue
			}
			c.Fail(id, pb.Code_CODE_PEER_GONE, t.Address()+" disconnected")
			return
		}
		pc.left++
		pc.targets = append(pc.targets, t)
		c.Deliver(t, &Delivery{Service: pb.BusService, Command: pb.MsgRequest, Payload: tbody, caller: c, callID: id})
	}
	for j, r := range remotes {
		i := len(targets) + j
		if group {
			pc.slots[r.Key()] = i
			pc.results[i] = &pb.GroupResult{Address: r.Address(), Code: pb.Code_CODE_DEADLINE_EXCEEDED}
		}
		if !r.Ask(c, id, aux) {
			if group {
				pc.results[i].Code = pb.Code_CODE_PEER_GONE
				continue
			}
			c.Fail(id, pb.Code_CODE_PEER_GONE, r.Address()+" is on a node that is gone")
			return
		}
		pc.left++
		pc.remotes = append(pc.remotes, r)
	}
	if pc.left == 0 {
		c.finishGroup(id, pc)
		return
	}
	c.bus.pending += pc.left
	c.pendingGauge.Store(int64(c.bus.pending))
	c.bus.calls[id] = pc
	if aux > 0 {
		pid, sys := c.pid, c.sys
		pc.timer = time.AfterFunc(time.Duration(aux)*time.Microsecond, func() {
			sys.Root.Send(pid, &callExpired{id: id})
		})
	}
}

// peerResult takes one answer to a request of this connection.
func (c *Endpoint) peerResult(r *PeerResult) {
	pc := c.bus.calls[r.CallID]
	if pc == nil {
		c.countLate()
		return
	}
	if pc.group {
		i, ok := pc.slots[r.From]
		if !ok {
			return
		}
		delete(pc.slots, r.From)
		pc.results[i].Code, pc.results[i].Payload = r.Code, r.Payload
	}
	pc.left--
	c.bus.pending--
	c.pendingGauge.Store(int64(c.bus.pending))
	if len(r.Payload) > c.cfg.MaxMessage {
		r.Code, r.Payload = pb.Code_CODE_TOO_LARGE, []byte(fmt.Sprintf("reply of %d bytes: more than this client takes", len(r.Payload)))
	}
	if !pc.group {
		c.endCall(r.CallID, pc, r.Code)
		if c.ctx.Err() == nil {
			c.writeReply(r.CallID, Result{Code: r.Code, Payload: r.Payload})
		}
		return
	}
	if pc.left == 0 {
		c.endCall(r.CallID, pc, pb.Code_CODE_OK)
		c.finishGroup(r.CallID, pc)
	}
}

// expire ends a request at its deadline, or when the client cancels it.
func (c *Endpoint) expire(m *callExpired) {
	pc := c.bus.calls[m.id]
	if pc == nil { // a Cancel before its frame was read: cancelFrame remembered it
		return
	}
	if m.canceled {
		c.takeCanceled(m.id) // in flight: nothing to remember
	}
	why := pb.Code_CODE_DEADLINE_EXCEEDED
	if m.canceled {
		why = pb.Code_CODE_CANCELED
	}
	for _, t := range pc.targets { // those that answered are forgotten already
		t.forgetIncoming(c, m.id, why)
	}
	for _, r := range pc.remotes {
		r.Forget(c, m.id, why)
	}
	c.bus.pending -= pc.left
	c.pendingGauge.Store(int64(c.bus.pending))
	c.endCall(m.id, pc, why)
	if m.canceled {
		return // the client no longer waits
	}
	if pc.group {
		c.finishGroup(m.id, pc)
		return
	}
	if c.ctx.Err() == nil {
		c.writeReply(m.id, Result{Code: pb.Code_CODE_DEADLINE_EXCEEDED, Payload: []byte("no reply by the deadline")})
	}
}

// endCall forgets a request to peers that ended with code (for
// Config.ObservePeer).
func (c *Endpoint) endCall(id uint64, pc *peerCall, code pb.Code) {
	if pc.timer != nil {
		pc.timer.Stop()
	}
	delete(c.bus.calls, id)
	if c.cfg.ObservePeer != nil {
		c.cfg.ObservePeer(pc.group, time.Since(pc.start), code)
	}
}

func (c *Endpoint) finishGroup(id uint64, pc *peerCall) {
	if c.ctx.Err() != nil {
		return
	}
	// The gathered reply must fit the caller's maximum: the largest
	// answers give way to a TOO_LARGE result until it does.
	size := 0
	for _, r := range pc.results {
		size += len(r.Payload) + len(r.Address) + 16
	}
	for size > c.cfg.MaxMessage {
		big := pc.results[0]
		for _, r := range pc.results {
			if len(r.Payload) > len(big.Payload) {
				big = r
			}
		}
		if len(big.Payload) <= 64 {
			break
		}
		size -= len(big.Payload)
		big.Code, big.Payload = pb.Code_CODE_TOO_LARGE, []byte("answer too large to gather")
		size += len(big.Payload)
	}
	if size > c.cfg.MaxMessage { // too many members for this client's maximum, even without answers
		c.Fail(id, pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d answers do not fit in %d bytes", len(pc.results), c.cfg.MaxMessage))
		return
	}
	b, err := gproto.Marshal(&pb.GroupReply{Results: pc.results})
	if err != nil {
		c.Fail(id, pb.Code_CODE_INTERNAL, err.Error())
		return
	}
	c.writeReply(id, Result{Payload: b})
}

// abandonCalls, at release, ends the requests in flight: their timers
// stop, and the targets that have not answered hear that the caller is
// gone (a later answer is late).
func (c *Endpoint) abandonCalls() {
	for id, pc := range c.bus.calls {
		c.endCall(id, pc, pb.Code_CODE_CANCELED)
		for _, t := range pc.targets {
			t.forgetIncoming(c, id, pb.Code_CODE_PEER_GONE)
		}
		for _, r := range pc.remotes {
			r.Forget(c, id, pb.Code_CODE_PEER_GONE)
		}
	}
}
