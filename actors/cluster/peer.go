package cluster

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
)

// A peer is one link with another node: one session each way (session,
// the other node's, which finds the link; local, this node's). It is
// created by that session's first Hello, comes up when the Hello exchange
// completes, and goes down once, for good (both sessions retired); the
// node links again, the same run of it or a new one, as a new peer.
//
// Its fields: the identity, fixed at creation; up, down and reason, under
// Federation.mu; the send side under smu; the inbox under imu; the
// reassembler owned by the delivery goroutine (run).
type peer struct {
	f           *Federation
	session     uint64 // the other node's session on this link
	local       uint64 // this node's session on this link
	name        string
	incarnation string
	addr        string
	pid         *actor.PID

	lastHeard atomic.Int64  // unix nanoseconds of the last envelope from it
	isDown    atomic.Bool   // set under Federation.mu, read anywhere
	announced atomic.Bool   // the host is told (or being told) NodeUp: Send may use it
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

	imu        sync.Mutex
	inbox      []*linkpb.Data
	inboxBytes int64
	wake       chan struct{} // capacity 1: the inbox gained something

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
		done:        make(chan struct{}),
		exited:      make(chan struct{}),
		wake:        make(chan struct{}, 1),
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
		p.f.system.Root.Send(p.pid, &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Data{Data: &linkpb.Data{
			Seq: p.seq, Index: uint32(i), Count: uint32(count), Size: uint64(n), Bytes: msg[lo:hi],
		}}})
	}
	return false, nil
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

// enqueue hands a Data envelope to the delivery goroutine. It reports
// false when the peer has sent past its budget (it ignores our
// acknowledgements): the link must close.
func (p *peer) enqueue(d *linkpb.Data) bool {
	cost := int64(len(d.Bytes)) + frameCost
	p.imu.Lock()
	if p.inboxBytes+cost > p.f.cfg.Budget {
		p.imu.Unlock()
		return false
	}
	p.inbox = append(p.inbox, d)
	p.inboxBytes += cost
	p.imu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

// run is the peer's delivery goroutine, started when it comes up: it
// tells the host the node is up, delivers its messages in order, and
// acknowledges them; when the peer goes down it tells the host, last.
// Every call to the host about this peer is made here, so the host sees
// NodeUp, the messages, then NodeDown, one at a time; and an earlier run
// of the same node (prev: its delivery goroutine's exited) has told the
// host it is down before this one says it is up.
func (p *peer) run(prev <-chan struct{}) {
	f := p.f
	defer f.wg.Done()
	defer close(p.exited)
	if prev != nil {
		<-prev
	}
	p.announced.Store(true)
	f.host.NodeUp(p.name, p.incarnation)
	r := newReassembler(f.cfg.MaxMessage)
	var batch []*linkpb.Data
	for {
		p.imu.Lock()
		batch, p.inbox = p.inbox, batch[:0]
		p.imu.Unlock()
		if len(batch) == 0 {
			select {
			case <-p.wake:
				continue
			case <-p.done:
			}
			break
		}
		var cost int64
		var last uint64
		for i, d := range batch {
			batch[i] = nil
			if p.isDown.Load() {
				break // fenced: nothing more from this incarnation
			}
			cost += int64(len(d.Bytes)) + frameCost
			msg, whole, err := r.add(d)
			if err != nil {
				f.stats.protocol.Add(1)
				f.logf("cluster: link to %s (%s) broke the protocol: %v", p.name, p.addr, err)
				f.declareDown(p, "link protocol error: "+err.Error(), byeProtocol)
				break
			}
			last = d.Seq
			if whole {
				if p.isDown.Load() {
					break
				}
				f.host.Deliver(p.name, msg)
				p.delivered.Add(1)
			}
		}
		p.imu.Lock()
		p.inboxBytes -= cost
		p.imu.Unlock()
		if p.isDown.Load() {
			break
		}
		if last != 0 {
			f.system.Root.Send(p.pid, &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Ack{Ack: &linkpb.Ack{Seq: last}}})
		}
	}
	f.mu.RLock()
	reason := p.reason
	f.mu.RUnlock()
	f.host.NodeDown(p.name, p.incarnation, reason)
}
