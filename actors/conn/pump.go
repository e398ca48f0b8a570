package conn

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// Incoming is one call or send, reassembled from its chunks.
type Incoming struct {
	ID       uint64
	Service  uint16
	Command  uint16
	Payload  []byte // valid until the Serve call returns, unless Owned
	NoReply  bool   // a send: no reply is expected
	Deadline time.Time
	Owned    bool // Payload was reassembled from chunks and may be kept
}

// Result is what Serve returns for a request.
type Result struct {
	Payload []byte
	Parts   [][]byte // instead of Payload (then nil): the payload gathered from these (gather.go)
	Code    pb.Code  // CODE_OK, or the error code; Payload then holds the error text
	Pending bool     // the reply will come later through Endpoint.Complete
	// Actor, for a Pending result, is the actor handler that will
	// complete it: FailActorCalls fails the call if that actor stops.
	Actor *actor.PID
}

// Messages the actor accepts.
type (
	// Delivery asks the actor to send an event to its client.
	Delivery struct {
		Service, Command uint16
		Payload          []byte   // not modified; may be shared between connections
		Parts            [][]byte // instead of Payload (then nil): the payload gathered from these (gather.go)
		counted          bool     // counted in inbox by SendEvent
		owned            bool     // Payload or Parts are the event's own (WriteEventFromServe, KeptParts): queued without a copy
		sent             int      // bytes already written (chunked events)
		seq              uint64   // sequence number, once the first chunk is written
		aux              uint32   // drop count carried by its frames
		caller           Caller   // a request: who waits for the answer to its call callID
		callID           uint64
		// OnDrop, if set, is called once if the event is dropped before
		// it reaches the event ring (a marker that must not be lost
		// silently), on the goroutine that drops it; it must not block.
		OnDrop func()
	}
	// Completion delivers a pending request's result (Complete).
	Completion struct {
		ID     uint64
		Result Result
	}
)

// SendEvent queues an event for the client. Any goroutine may call it; it
// never blocks. Events waiting in the actor's mailbox are bounded by what
// the event ring and the event queue could hold together (in events and in
// bytes): past that, the event is dropped at once and counted like any
// other drop, so the mailbox never grows without bound. Such a drop is
// reported with the next event the actor handles, which may be one sent
// before the dropped one: the count is exact, the position of the gap is
// not.
func (c *Endpoint) SendEvent(service, command uint16, payload []byte) {
	if !c.admit(1, int64(len(payload))) {
		c.lateDrops.Add(1)
		return
	}
	c.sys.Root.Send(c.pid, &Delivery{Service: service, Command: command, Payload: payload, counted: true})
}

// admit counts n events of bytes bytes into the mailbox if they fit its
// bounds (mailboxLimit, mailboxBytes), and reports whether they did (else
// nothing is counted).
func (c *Endpoint) admit(n, bytes int64) bool {
	if c.inbox.Add(n) > c.mailboxLimit {
		c.inbox.Add(-n)
		return false
	}
	if c.inboxBytes.Add(bytes) > c.mailboxBytes {
		c.inboxBytes.Add(-bytes)
		c.inbox.Add(-n)
		return false
	}
	return true
}

// Complete delivers the result of a request that Serve left pending. Any
// goroutine may call it.
func (c *Endpoint) Complete(id uint64, r Result) {
	c.sys.Root.Send(c.pid, &Completion{ID: id, Result: r})
}

// pump serves the request ring and runs the actor until the actor stops,
// then releases the connection. The pump's state is owned by the
// goroutine that runs it: this one, or the reaper once it took over from
// a stuck handler (see linger.go).
func (c *Endpoint) pump() {
	c.run()
	c.release()
	close(c.lingering)
}

func (c *Endpoint) run() {
	for !c.stopped {
		c.serveRequests()
		c.runMailbox()
		c.leaveWhenServed()
		c.drainBacklog()
		c.queued.Store(int64(c.backlog.len()))
		c.resp.Flush()
		c.ev.Flush()
		if c.stopped {
			break
		}
		if c.asked {
			// A request or an answer the round routed may have readied
			// a goroutine on this P (another node's link writer, started
			// by a go statement): it runs now, not after the spin below,
			// or on the other CPU once that one steals it. Not after
			// publications and sends: a stream's writer gathers more
			// when it runs later.
			c.asked = false
			runtime.Gosched()
		}
		c.park()
	}
}

func (c *Endpoint) park() {
	if c.spinner.Spin(c.readyFn) {
		return
	}
	conds := c.conds[:0]
	if !c.stopping {
		c.in.Arm()
		conds = append(conds, c.in)
	}
	if c.backlog.len() > 0 {
		c.ev.ArmSpace()
		conds = append(conds, c.ev.Space())
	}
	parked := time.Now()
	c.parked.Store(true) // before readyFn's look at qn: Schedule rings us if it sees it
	ready := c.parkReadyFn
	lend := c.lendable()
	if lend { // from here to reclaim, a borrower may hold the pump's state (lend.go)
		ready = c.lentReadyFn
		c.own.Store(ownLent)
	}
	err := c.parker.Park(ready, conds...)
	if lend {
		c.reclaim()
		c.nudged.Store(false)
	}
	c.parked.Store(false)
	c.spinner.Woke(time.Since(parked))
	if err != nil { // the doorbell closed under us: only release does that
		c.end(Reason{Code: pb.Code_CODE_INTERNAL, Text: err.Error()})
	}
}

// parkReady is readyToRun for a parked pump: the dispatcher rings only a
// pump that says it is parked, so it says so again before every look.
func (c *Endpoint) parkReady() bool {
	c.parked.Store(true)
	return c.readyFn()
}

func (c *Endpoint) readyToRun() bool {
	return c.qn.Load() > 0 || (!c.stopping && c.in.Ready()) ||
		(c.backlog.len() > 0 && c.ev.Fits(c.nextChunk(c.backlog.peek())))
}

func (c *Endpoint) runMailbox() {
	for c.qn.Load() > 0 {
		c.qmu.Lock()
		q := c.q
		c.q = nil
		c.qn.Store(0)
		c.qmu.Unlock()
		for _, fn := range q {
			fn()
		}
	}
}

// serveRequests handles up to a batch of request frames.
func (c *Endpoint) serveRequests() {
	if c.stopping || !c.awaitAnnounced() {
		return
	}
	for range 64 {
		before := c.in.Position()
		f, err := c.in.Next()
		if err == shm.ErrRingEmpty {
			break
		}
		if err != nil {
			c.violation(err.Error())
			return
		}
		c.stats.BytesIn.Add(uint64(len(f.Body)))
		if f.Kind == pb.KindCall {
			// A handler may take long: what came before the call is
			// served (routed: out it goes), and its client's Flush and
			// Close need not wait for the call.
			c.flushOutbox()
			c.in.ReleaseTo(before)
		}
		if !c.frame(f) {
			c.flushOutbox() // what was routed before the bad frame still goes
			return
		}
	}
	c.in.Release()
	c.flushOutbox()
}

// violation closes a connection whose client broke the protocol: logged
// once, counted, and the client is told why.
func (c *Endpoint) violation(what string) {
	if c.stopping {
		return
	}
	c.cfg.Logger.Warn("protocol violation, closing connection", slog.Uint64("conn", c.cfg.ID), slog.String("reason", what))
	c.stats.Violations.Add(1)
	c.stopping = true
	why := Reason{Code: pb.Code_CODE_PROTOCOL_VIOLATION, Text: what}
	c.sayGoodbye(why)
	c.end(why)
}

// frame handles one request frame; false means the connection is broken.
func (c *Endpoint) frame(f shm.Frame) bool {
	if f.Kind < pb.KindCall || f.Kind > pb.KindPeerReply || f.Kind == pb.KindReply || f.Kind == pb.KindEvent {
		c.violation(fmt.Sprintf("frame kind %d on the request ring", f.Kind))
		return false
	}
	m := pb.Message{Header: f.Header, Body: f.Body}
	if !c.chunks.Whole(f) {
		var whole bool
		var err error
		if m, whole, err = c.chunks.Add(f); err != nil {
			c.violation(err.Error())
			return false
		}
		if !whole {
			return true
		}
	}
	if m.Owned && payloadLen(m) > c.cfg.MaxMessage {
		c.violation("chunked message exceeds the limit or changes kind")
		return false
	}
	if m.Kind >= pb.KindPeerSend {
		return c.busFrame(BusFrame{Kind: m.Kind, Flags: m.Flags, ID: m.ID, Aux: m.Aux, Body: m.Body, Owned: m.Owned})
	}
	return c.serve(&Incoming{ID: m.ID, Service: m.Service, Command: m.Command, Payload: m.Body, NoReply: m.Kind == pb.KindSend,
		Deadline: deadline(m.Since, m.Aux), Owned: m.Owned})
}

// payloadLen is the length of a message's payload: its body less the
// protocol's prefix (a bus frame's destination, a peer reply's handle),
// which the limit does not count; -1 for a body too short for its prefix
// (the router refuses it).
func payloadLen(m pb.Message) int {
	switch {
	case m.Kind == pb.KindPeerReply:
		return len(m.Body) - pb.ReplyHandleSize
	case m.Kind >= pb.KindPeerSend && len(m.Body) > 0:
		return len(m.Body) - 1 - int(m.Body[0])
	case m.Kind >= pb.KindPeerSend:
		return -1
	}
	return len(m.Body)
}

// deadline is the deadline of a request with aux microseconds to go (0:
// none) from since, when its first frame arrived (zero: now, for a request
// of one frame).
func deadline(since time.Time, aux uint32) time.Time {
	if aux == 0 {
		return time.Time{}
	}
	if since.IsZero() {
		since = time.Now()
	}
	return since.Add(time.Duration(aux) * time.Microsecond)
}

// serve runs Host.Serve for r, recovering a panic into
// CODE_INTERNAL, and writes the reply unless it is pending or not wanted;
// false means the client broke the protocol.
func (c *Endpoint) serve(r *Incoming) bool {
	if !r.NoReply && c.hasCancel(r.ID) {
		c.violation(fmt.Sprintf("call id %d is already in flight", r.ID))
		return false
	}
	if !r.NoReply && c.saidBye.Load() {
		// Written before a goodbye: its client failed it with ErrClosed
		// and reads no reply.
		c.stats.ByeSkipped.Add(1)
		return true
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if !r.NoReply {
		if !r.Deadline.IsZero() {
			ctx, cancel = context.WithDeadline(c.ctx, r.Deadline)
		} else {
			ctx, cancel = context.WithCancel(c.ctx)
		}
		if !c.startCancelable(r.ID, cancel) { // its Cancel overtook it (cancel.go)
			cancel()
			c.refuseCanceled(r)
			return true
		}
	}
	c.serveSvc, c.serveCmd = r.Service, r.Command // before the CAS, after which the reaper may read them
	if !c.serving.CompareAndSwap(handlerIdle, handlerRunning) {
		if cancel != nil {
			c.dropCancel(r.ID)
			cancel()
		}
		return true // the connection has ended (barred): nobody waits for a reply
	}
	if r.NoReply { // a send: nobody waits, nobody cancels; its context is the connection's
		c.stats.Sends.Add(1)
		res := c.call(c.ctx, r)
		c.leaveHandler(false)
		if res.Pending {
			c.waitSend(r.ID)
		}
		return true
	}
	c.stats.Calls.Add(1)
	var start time.Time
	if c.cfg.ObserveCall != nil {
		start = time.Now()
	}
	res := c.call(ctx, r)
	c.leaveHandler(true) // returns only if the connection still belongs to this goroutine
	if res.Pending {
		c.waitActor(r.ID, ctx, cancel, res.Actor, r.Service, start) // the context lives until the Completion, or ends first
		return true
	}
	c.dropCancel(r.ID)
	cancel()
	if c.cfg.ObserveCall != nil {
		c.cfg.ObserveCall(r.Service, time.Since(start), res.Code)
	}
	if c.ctx.Err() != nil {
		// The connection is ending: its client learns why from the
		// socket. (A call that was cancelled or is past its deadline
		// still gets its reply, which its client counts late.)
		c.countLate()
		return true
	}
	c.writeReply(r.ID, res)
	return true
}

func (c *Endpoint) call(ctx context.Context, r *Incoming) (res Result) {
	defer func() {
		if v := recover(); v != nil {
			c.stats.Panics.Add(1)
			c.cfg.Logger.Error("handler panic", slog.Uint64("conn", c.cfg.ID), slog.Int("service", int(r.Service)),
				slog.Int("command", int(r.Command)), slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			res = Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte("handler panicked")}
		}
	}()
	return c.cfg.Host.Serve(ctx, c, r)
}

// writeReply writes a reply, in chunks if needed, waiting for room.
func (c *Endpoint) writeReply(id uint64, res Result) {
	if c.saidBye.Load() { // the client is gone: nobody reads the ring
		c.countLate()
		return
	}
	c.stats.Replies.Add(1)
	c.stats.BytesOut.Add(uint64(res.size()))
	h := shm.Header{Kind: pb.KindReply, Aux: uint32(res.Code), ID: id}
	parts := res.Parts
	if parts == nil {
		parts = [][]byte{res.Payload}
	}
	if err := pb.WriteMessage(c.ctx, c.ctx, c.resp, h, true, parts...); err != nil && c.ctx.Err() == nil {
		c.violation("response ring: " + err.Error())
	}
}

// pumpDispatcher hands mailbox runs to the pump. Schedule never blocks: it
// may be called by the pump itself.
type pumpDispatcher struct{ c *Endpoint }

func (d pumpDispatcher) Schedule(fn func()) {
	c := d.c
	c.qmu.Lock()
	c.q = append(c.q, fn)
	c.qn.Store(int32(len(c.q)))
	c.qmu.Unlock()
	// The flag lives in this process's memory, not in the segment: the
	// client cannot clear it, and it outlives the mapping (a late Schedule
	// after release only rings a closed doorbell).
	if c.parked.Load() && c.parked.CompareAndSwap(true, false) {
		c.bell.Ring()
	}
}

func (d pumpDispatcher) Throughput() int { return 300 }

// connActor is the actor's behaviour; it runs on the pump.
type connActor Endpoint

func (a *connActor) Receive(ac actor.Context) {
	c := (*Endpoint)(a)
	switch m := ac.Message().(type) {
	case *Delivery:
		if m.counted {
			c.inbox.Add(-1)
			c.inboxBytes.Add(-int64(m.size()))
		}
		c.queueEvent(m)
	case *Completion:
		c.complete(m)
	case *actorCallDone:
		c.actorDone(m)
	case *actorStopped:
		c.actorStopped(m)
	case *eventBatch:
		c.inbox.Add(-int64(len(m.evs)))
		c.inboxBytes.Add(-m.bytes)
		for _, e := range m.evs {
			c.queueShared(e)
		}
	case *PeerResult:
		c.peerResult(m)
	case *callExpired:
		c.expire(m)
	case *clientLeft:
		c.leaving = &m.why
	case *actor.Stopping:
		c.stopping = true
		c.whyOnce.Do(func() { c.why = Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "stopped"}; c.cancel() })
	case *actor.Stopped:
		c.stopped = true
	}
}
