package cluster

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// A peer is one link with another node: one session each way (session,
// the other node's, which finds the link; local, this node's). It is
// created by that session's first Hello, comes up when the Hello exchange
// completes, and goes down once, for good (both sessions retired); the
// node links again, the same run of it or a new one, as a new peer.
//
// Its fields: the identity, fixed at creation; up, down and reason, under
// Federation.mu; the send side under smu; the inbox and who delivers
// under imu; the reassembler owned by whoever delivers (delivering).
//
// Sending: Send queues chunks; to a node that takes batches (batch), the
// chunks wait in pend and one sendToken at a time is with remote's
// writer, which turns it into a Batch of everything pending when it takes
// it (sendToken.Serialize), so a burst of messages crosses as a few
// envelopes and a lone message as soon as the writer runs. Receiving:
// remote's reader of the link's stream hands Data to the host in place
// when nothing is queued and nobody else delivers (take), and otherwise
// queues it for the peer's delivery goroutine (run), which also tells the
// host the node is up and down. Acknowledgements ride on Batches and
// heartbeats; an Ack of its own is sent when a quarter of the other
// node's budget was delivered since the last (or after every pass, to a
// node that does not take batches).
type peer struct {
	f           *Federation
	session     uint64 // the other node's session on this link
	local       uint64 // this node's session on this link
	name        string
	incarnation string
	addr        string
	pid         *actor.PID
	batch       bool  // the other node takes Batches and acknowledgements in them (FEATURE_BATCH)
	packed      bool  // and small messages packed in them (FEATURE_PACKED)
	ackEvery    int64 // bytes delivered that call for an Ack of their own

	created   time.Time     // when its first Hello came
	lastHeard atomic.Int64  // unix nanoseconds of the last envelope from it
	isDown    atomic.Bool   // set under Federation.mu, read anywhere
	announced atomic.Bool   // the host is told (or being told) NodeUp: Send may use it
	inPlace   atomic.Bool   // a reader is delivering in place: the link is not silent
	done      chan struct{} // closed when it goes down
	exited    chan struct{} // closed when its delivery goroutine has told the host it is down
	up        bool          // under Federation.mu: the Hello exchange completed
	reason    string        // under Federation.mu: why it went down

	smu      sync.Mutex
	seq      uint64    // the last sequence number sent
	acked    uint64    // the last sequence number acknowledged
	costs    []uint32  // the costs of the chunks acked+1..seq, oldest first
	unacked  int64     // their sum
	ackMoved time.Time // when acked last moved, or the window last filled from empty
	sent     uint64    // messages accepted by Send
	pend     []chunk   // chunks for the next Batch (batch only)
	queued   bool      // a sendToken is with remote's writer

	imu        sync.Mutex
	inbox      []*linkpb.Data
	inboxBytes int64
	ready      bool          // the host heard NodeUp and nothing stops delivery: readers may deliver in place
	delivering bool          // someone owns r and is calling the host
	wake       chan struct{} // capacity 1: the inbox gained something, or an in-place delivery ended
	r          *reassembler
	whole      [][]byte // a pass's messages, for a host that takes them at once (owned with r)

	inSeq     atomic.Uint64 // the last sequence number delivered from it
	inUnacked atomic.Int64  // bytes delivered since the last Ack of their own

	delivered atomic.Uint64 // messages handed to the host
}

func newPeer(f *Federation, session, local uint64, h *linkpb.Hello) *peer {
	p := &peer{
		f:           f,
		session:     session,
		local:       local,
		name:        h.Node,
		incarnation: h.Incarnation,
		addr:        h.Address,
		pid:         actor.NewPID(h.Address, linkActorName),
		batch:       !f.cfg.v1Only && h.Features&uint32(linkpb.Feature_FEATURE_BATCH) != 0,
		packed:      !f.cfg.v1Only && !f.cfg.noPacked && h.Features&uint32(linkpb.Feature_FEATURE_BATCH|linkpb.Feature_FEATURE_PACKED) == uint32(linkpb.Feature_FEATURE_BATCH|linkpb.Feature_FEATURE_PACKED),
		// The other node's budget is at most this one's (a larger one
		// is refused): acknowledge well before it fills.
		ackEvery: max(int64(min(h.Budget, uint64(f.cfg.Budget)))/4, 1),
		done:     make(chan struct{}),
		exited:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
		r:        newReassembler(f.cfg.MaxMessage),
		created:  time.Now(),
	}
	p.heard()
	return p
}

func (p *peer) heard() { p.lastHeard.Store(time.Now().UnixNano()) }

// send queues msg for p in chunks, if the budget has room. It reports
// whether the budget refused it.
func (p *peer) send(msg []byte) (refused bool, err error) {
	n := int64(len(msg))
	count := chunks(n)
	cost := n + frameCost*count
	p.smu.Lock()
	defer p.smu.Unlock()
	if p.isDown.Load() {
		return false, ErrNodeNotUp
	}
	if p.unacked+cost > p.f.cfg.Budget {
		return true, ErrBudget
	}
	if p.unacked == 0 {
		p.ackMoved = time.Now()
	}
	p.sent++
	for i := range count {
		lo := i * ChunkSize
		hi := min(lo+ChunkSize, n)
		p.seq++
		p.costs = append(p.costs, uint32(hi-lo+frameCost))
		p.unacked += hi - lo + frameCost
		c := chunk{seq: p.seq, index: uint32(i), count: uint32(count), size: uint64(n), bytes: msg[lo:hi]}
		if p.batch {
			p.pend = append(p.pend, c)
		} else {
			p.f.send(p.pid, &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Data{Data: c.data()}})
		}
	}
	if p.batch && !p.queued {
		p.queued = true
		p.f.system.Root.Send(p.pid, &sendToken{p})
	}
	return false, nil
}

// A chunk is a Data waiting in pend: a value, so that a message queued
// for a Batch that packs it costs no Data of its own.
type chunk struct {
	seq          uint64
	index, count uint32
	size         uint64
	bytes        []byte
}

func (c *chunk) data() *linkpb.Data {
	return &linkpb.Data{Seq: c.seq, Index: c.index, Count: c.count, Size: c.size, Bytes: c.bytes}
}

// A Batch carries at most batchBytes of chunks (at least one chunk) and
// batchChunks chunks: large enough that a burst crosses in few envelopes,
// small enough that a heartbeat queued behind one is not held long.
const (
	batchBytes  = 1 << 20
	batchChunks = 4096
)

// errNothingPending: a sendToken found nothing to send (its peer went
// down meanwhile); remote's writer skips it.
var errNothingPending = errors.New("cluster: nothing pending")

// A sendToken stands for p's pending chunks in remote's writer queue.
// Only one is queued at a time (p.queued): Sends meanwhile add to p.pend.
type sendToken struct{ p *peer }

// Serialize is called by remote's writer, on its goroutine, as it takes
// the token: it returns a Batch of the chunks pending now (up to
// batchBytes), acknowledging what p delivered, and queues the token again
// if chunks are left.
func (t *sendToken) Serialize() (remote.RootSerialized, error) {
	p := t.p
	p.smu.Lock()
	if p.isDown.Load() {
		// The other node takes nothing more from this session.
		p.f.stats.unsent.Add(uint64(len(p.pend)))
		p.pend, p.queued = nil, false
		p.smu.Unlock()
		return nil, errNothingPending
	}
	// A run of small whole messages is packed (to a node that takes
	// it), a run of others goes as Data: one kind to a Batch.
	small := func(c *chunk) bool { return p.packed && c.count == 1 && len(c.bytes) <= packMax }
	packing := len(p.pend) > 0 && small(&p.pend[0])
	n, size := 0, 0
	for n < len(p.pend) && n < batchChunks && small(&p.pend[n]) == packing && (n == 0 || size+len(p.pend[n].bytes) <= batchBytes) {
		size += len(p.pend[n].bytes)
		if packing {
			size += protowire.SizeVarint(uint64(len(p.pend[n].bytes)))
		}
		n++
	}
	data := p.pend[:n:n]
	if p.pend = p.pend[n:]; len(p.pend) == 0 {
		p.pend, p.queued = nil, false
	} else {
		p.f.system.Root.Send(p.pid, t) // the rest, after what the writer holds now
	}
	p.smu.Unlock()
	if n == 0 {
		return nil, errNothingPending
	}
	p.f.stats.batches.Add(1)
	b := &linkpb.Batch{Ack: p.inSeq.Load()}
	if packing {
		p.f.stats.packed.Add(1)
		b.First, b.Packed = data[0].seq, make([]byte, 0, size)
		for i := range data {
			b.Packed = protowire.AppendBytes(b.Packed, data[i].bytes)
		}
	} else {
		b.Data = make([]*linkpb.Data, len(data))
		for i := range data {
			b.Data[i] = data[i].data()
		}
	}
	return &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Batch{Batch: b}}, nil
}

// ack takes an acknowledgement of every chunk up to seq. It reports false
// when seq acknowledges what was never sent.
func (p *peer) ack(seq uint64) bool {
	p.smu.Lock()
	defer p.smu.Unlock()
	if seq > p.seq {
		return false
	}
	if seq <= p.acked {
		return true // an older acknowledgement, overtaken
	}
	k := int(seq - p.acked)
	for _, c := range p.costs[:k] {
		p.unacked -= int64(c)
	}
	p.costs = p.costs[k:]
	if len(p.costs) == 0 {
		p.costs = nil // let the array go
	}
	p.acked = seq
	p.ackMoved = time.Now()
	return true
}

// stalled reports whether p has held unacknowledged chunks for longer
// than d with none acknowledged.
func (p *peer) stalled(now time.Time, d time.Duration) bool {
	p.smu.Lock()
	defer p.smu.Unlock()
	return p.unacked > 0 && now.Sub(p.ackMoved) > d
}

// figures returns the send side's counters.
func (p *peer) figures() (unacked int64, sent uint64) {
	p.smu.Lock()
	defer p.smu.Unlock()
	return p.unacked, p.sent
}

// take hands Data envelopes from the link's stream to the host, in order:
// in place, on the calling goroutine (remote's reader of the stream), when
// the host heard NodeUp, nothing is queued and nobody else is delivering;
// queued for the delivery goroutine otherwise. It reports false when the
// peer has sent past its budget (it ignores our acknowledgements): the
// link must close.
func (p *peer) take(ds []*linkpb.Data) bool {
	if p.inPlaceDo(func() { p.deliver(ds) }) {
		return true
	}
	var cost int64
	for _, d := range ds {
		cost += int64(len(d.Bytes)) + frameCost
	}
	p.imu.Lock()
	if p.inboxBytes+cost > p.f.cfg.Budget {
		p.imu.Unlock()
		return false
	}
	p.inbox = append(p.inbox, ds...)
	p.inboxBytes += cost
	p.imu.Unlock()
	p.signal()
	return true
}

// inPlaceDo runs deliver on the calling goroutine if delivery may happen
// in place now (the host heard NodeUp, nothing is queued, nobody else is
// delivering), owning delivery meanwhile, and reports whether it did.
// Else the caller queues what it has; run delivers it (a reader is alone
// on its stream, so nothing of its own overtakes it meanwhile).
func (p *peer) inPlaceDo(deliver func()) bool {
	p.imu.Lock()
	if !p.ready || p.delivering || len(p.inbox) > 0 {
		p.imu.Unlock()
		return false
	}
	p.delivering = true
	p.imu.Unlock()
	p.inPlace.Store(true)
	deliver()
	p.heard() // nothing was read meanwhile: not silent for that
	p.inPlace.Store(false)
	p.imu.Lock()
	p.delivering = false
	signal := len(p.inbox) > 0 || !p.ready
	p.imu.Unlock()
	if signal {
		p.signal()
	}
	return true
}

// takePacked is take for a Batch's packed messages: delivered in place
// from packed itself, or queued as Data (rarely: while the host hears
// NodeUp or another delivery is under way). It reports false when the
// peer sent past its budget; a malformed batch takes the link down.
func (p *peer) takePacked(first uint64, packed []byte) bool {
	if p.inPlaceDo(func() { p.deliverPacked(first, packed) }) {
		return true
	}
	var ds []*linkpb.Data
	if err := unpack(first, packed, func(seq uint64, msg []byte) error {
		ds = append(ds, &linkpb.Data{Seq: seq, Count: 1, Size: uint64(len(msg)), Bytes: msg})
		return nil
	}); err != nil {
		p.f.stats.protocol.Add(1)
		p.f.declareDown(p, "link protocol error: "+err.Error(), byeProtocol)
		return true
	}
	return p.take(ds)
}

// deliverPacked is deliver for packed messages, which are whole: each
// must be the next in sequence, with no message being joined.
func (p *peer) deliverPacked(first uint64, packed []byte) {
	f := p.f
	defer p.recoverHost()
	var done int64
	var last uint64
	err := unpack(first, packed, func(seq uint64, msg []byte) error {
		if seq != p.r.next || p.r.buf != nil {
			return fmt.Errorf("sequence gap: want %d, got packed %d", p.r.next, seq)
		}
		p.r.next++
		done += int64(len(msg)) + frameCost
		last = seq
		if f.batchHost != nil {
			p.whole = append(p.whole, msg)
		} else if !p.isDown.Load() {
			f.host.Deliver(p.name, msg)
			p.delivered.Add(1)
		}
		return nil
	})
	if err != nil {
		clear(p.whole)
		p.whole = p.whole[:0]
		f.stats.protocol.Add(1)
		f.limitedf(&f.logs.protocol, "cluster: link to %s (%s) broke the protocol: %v", p.name, p.addr, err)
		f.declareDown(p, "link protocol error: "+err.Error(), byeProtocol)
		return
	}
	p.acknowledge(last, done)
}

// acknowledge records what a pass delivered (up to last, done bytes) and
// hands the host a gathered pass; it sends an Ack of its own when due.
func (p *peer) acknowledge(last uint64, done int64) {
	f := p.f
	if len(p.whole) > 0 {
		if !p.isDown.Load() {
			f.batchHost.DeliverBatch(p.name, p.whole)
			p.delivered.Add(uint64(len(p.whole)))
		}
		clear(p.whole)
		p.whole = p.whole[:0]
	}
	if last == 0 || p.isDown.Load() {
		return
	}
	p.inSeq.Store(last)
	if !p.batch || p.inUnacked.Add(done) >= p.ackEvery {
		p.inUnacked.Store(0)
		f.stats.acks.Add(1)
		f.send(p.pid, &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Ack{Ack: &linkpb.Ack{Seq: last}}})
	}
}

// recoverHost, deferred by whoever hands the host messages, turns a
// panic in the host (its bug, on another node's message) into the link's
// end, counted: the goroutine delivering goes on, and lets go of delivery.
func (p *peer) recoverHost() {
	if r := recover(); r != nil {
		clear(p.whole)
		p.whole = p.whole[:0]
		p.f.stats.hostPanics.Add(1)
		p.f.limitedf(&p.f.logs.hostPanics, "cluster: the host panicked on a message from %s: %v", p.name, r)
		p.f.declareDown(p, fmt.Sprintf("the host panicked on a message: %v", r), byeProtocol)
	}
}

func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// deliver joins ds's chunks into messages and hands each whole one to the
// host, then acknowledges them. The caller owns delivery (delivering). It
// stops at the link's end: nothing more from a session that went down.
// It returns the bytes ds cost. A panic in the host (its bug, on another
// node's message) takes the link down, counted, and ends here: whoever
// delivers goes on (and lets go of delivery).
func (p *peer) deliver(ds []*linkpb.Data) (cost int64) {
	f := p.f
	defer p.recoverHost()
	for _, d := range ds { // all of it, whatever happens below
		cost += int64(len(d.Bytes)) + frameCost
	}
	var done int64
	var last uint64
	for i, d := range ds {
		ds[i] = nil
		if p.isDown.Load() {
			continue // fenced: nothing more from this session
		}
		msg, whole, err := p.r.add(d)
		if err != nil {
			f.stats.protocol.Add(1)
			f.limitedf(&f.logs.protocol, "cluster: link to %s (%s) broke the protocol: %v", p.name, p.addr, err)
			f.declareDown(p, "link protocol error: "+err.Error(), byeProtocol)
			continue
		}
		done += int64(len(d.Bytes)) + frameCost
		last = d.Seq
		switch {
		case !whole:
		case f.batchHost != nil:
			p.whole = append(p.whole, msg)
		case !p.isDown.Load():
			f.host.Deliver(p.name, msg)
			p.delivered.Add(1)
		}
	}
	p.acknowledge(last, done)
	return cost
}

// run is the peer's delivery goroutine, started when it comes up: it
// tells the host the node is up, delivers what the readers queued, and
// when the peer goes down waits for a delivery in place to end and tells
// the host, last. So the host sees NodeUp, the messages, then NodeDown,
// one call at a time; and an earlier run of the same node (prev: its
// delivery goroutine's exited) has told the host it is down before this
// one says it is up.
func (p *peer) run(prev <-chan struct{}) {
	f := p.f
	defer f.wg.Done()
	defer close(p.exited)
	if prev != nil {
		<-prev
	}
	p.announced.Store(true)
	f.host.NodeUp(p.name, p.incarnation)
	p.imu.Lock()
	p.ready = true
	var batch []*linkpb.Data
	for !p.isDown.Load() {
		if p.delivering || len(p.inbox) == 0 {
			p.imu.Unlock()
			select {
			case <-p.wake:
			case <-p.done:
			}
			p.imu.Lock()
			continue
		}
		batch, p.inbox = p.inbox, batch[:0]
		p.delivering = true
		p.imu.Unlock()
		// A pass at most as large as a Batch, so that the host is not
		// handed a whole budget's worth at once.
		var cost int64
		for rest := batch; len(rest) > 0; {
			k := min(len(rest), batchChunks)
			cost += p.deliver(rest[:k])
			rest = rest[k:]
		}
		p.imu.Lock()
		p.inboxBytes -= cost
		p.delivering = false
	}
	// Down: no reader delivers in place from now on; wait for one that
	// is.
	p.ready = false
	for p.delivering {
		p.imu.Unlock()
		<-p.wake
		p.imu.Lock()
	}
	p.inbox, p.inboxBytes = nil, 0
	p.imu.Unlock()
	f.mu.RLock()
	reason := p.reason
	f.mu.RUnlock()
	f.host.NodeDown(p.name, p.incarnation, reason)
}
