package cluster

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
)

const (
	// fencedKept is how many fenced incarnations of one node name are kept.
	fencedKept = 8
	// maxDial bounds the addresses learned from Hellos and Byes.
	maxDial = 4096
)

// onHello handles a Hello: it opens a link, completes one, or refuses.
//
// The exchange: each node sends Hello{seen: 0} to each address it dials,
// every heartbeat until the link is up. A node receiving a Hello from a
// session it has not seen records the peer and answers Hello{seen: that
// session}; a Hello that names the receiver's own session as seen
// completes the link on the receiver's side (it comes up, and answers
// once so that the other side completes too). Data follows a node's
// completing Hello on the same ordered stream, so it never arrives
// before its receiver is up.
func (f *Federation) onHello(session uint64, h *linkpb.Hello) {
	if err := checkHello(h); err != nil || session == 0 {
		f.stats.protocol.Add(1)
		return // no trustworthy address to answer
	}
	pid := actor.NewPID(h.Address, linkActorName)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	refuse := func(code uint32, format string, args ...any) {
		reason := fmt.Sprintf(format, args...)
		f.stats.refusedOut.Add(1)
		f.logf("cluster: refused node %s (%s) at %s: %s", h.Node, h.Incarnation, h.Address, reason)
		f.bye(pid, session, code, reason)
	}
	switch {
	case h.Cluster != f.cfg.Cluster:
		refuse(byeCluster, "cluster %q is not this node's cluster %q", h.Cluster, f.cfg.Cluster)
		return
	case h.Node == f.self:
		refuse(byeDuplicate, "node name %q is this node's own", h.Node)
		return
	case h.Budget > uint64(f.cfg.Budget):
		refuse(byeBudget, "its link budget %d is larger than this node's %d", h.Budget, f.cfg.Budget)
		return
	}
	for _, inc := range f.fenced[h.Node] {
		if inc == h.Incarnation {
			refuse(byeFenced, "node %s (%s) was declared down: it must rejoin as a new incarnation", h.Node, h.Incarnation)
			return
		}
	}
	p := f.bySession[session]
	if p == nil {
		if q := f.byName[h.Node]; q != nil {
			if q.addr != h.Address {
				refuse(byeDuplicate, "node name %q is taken by the node at %s", h.Node, q.addr)
				return
			}
			// The same name at the same address: the node restarted.
			f.downLocked(q, "the node restarted as a new incarnation", byeFenced)
		}
		if q := f.byAddr[h.Address]; q != nil {
			f.downLocked(q, "another node now answers at its address", byeFenced)
		}
		p = newPeer(f, session, h)
		f.bySession[session], f.byName[h.Node], f.byAddr[h.Address] = p, p, p
		if _, ok := f.dial[h.Address]; ok || len(f.dial) < maxDial {
			f.dial[h.Address] = "" // dial it (again) until linked
		}
	} else if p.name != h.Node || p.incarnation != h.Incarnation || p.addr != h.Address {
		f.stats.protocol.Add(1)
		f.downLocked(p, "link protocol error: its Hello changed who it is", byeProtocol)
		return
	}
	p.heard()
	wasUp := p.up
	if h.Seen == f.session && !p.up {
		p.up = true
		f.logf("cluster: node %s (%s) at %s is up", p.name, p.incarnation, p.addr)
		prev := f.lastRun[p.name]
		f.lastRun[p.name] = p.exited
		f.wg.Add(1)
		go p.run(prev)
	}
	if h.Seen != f.session || !wasUp {
		f.hello(p.pid, session)
	}
}

// onBye handles a Bye: the sender ends our link, or refuses us.
func (f *Federation) onBye(session uint64, b *linkpb.Bye) {
	if b.To != f.session {
		f.stats.stale.Add(1) // meant for an earlier run of this node
		return
	}
	reason := b.Reason
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.bySession[session]; p != nil {
		f.downLocked(p, "the node said bye: "+reason, 0)
	}
	if refusal(b.Code) && checkAddr(b.Address) == nil {
		if _, ok := f.dial[b.Address]; ok || len(f.dial) < maxDial {
			f.dial[b.Address] = reason
		}
		f.stats.refusedIn.Add(1)
		f.logf("cluster: the node at %s refused this one: %s", b.Address, reason)
	}
}

// declareDown ends p's link for good.
func (f *Federation) declareDown(p *peer, reason string, code uint32) {
	f.mu.Lock()
	f.downLocked(p, reason, code)
	f.mu.Unlock()
}

// downLocked ends p's link: nothing more from its session is delivered,
// its incarnation is fenced if it was up, and its delivery goroutine
// tells the host. With a code, p is told why (best effort). f.mu is held.
func (f *Federation) downLocked(p *peer, reason string, code uint32) {
	if p.isDown.Load() {
		return
	}
	p.isDown.Store(true)
	p.reason = reason
	if f.bySession[p.session] == p {
		delete(f.bySession, p.session)
	}
	if f.byName[p.name] == p {
		delete(f.byName, p.name)
	}
	if f.byAddr[p.addr] == p {
		delete(f.byAddr, p.addr)
	}
	if p.up {
		inc := append(f.fenced[p.name], p.incarnation)
		f.fenced[p.name] = inc[max(0, len(inc)-fencedKept):]
		f.logf("cluster: node %s (%s) at %s is down: %s", p.name, p.incarnation, p.addr, reason)
	}
	close(p.done)
	if code != 0 {
		f.bye(p.pid, p.session, code, reason)
	}
}

// endpointLost: remote's stream to addr broke (remote saw it end, ~ms
// after the process there died). Messages may have been lost with it.
func (f *Federation) endpointLost(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.byAddr[addr]; p != nil {
		// No Bye: it could not cross, and would only make remote
		// dial the dead address again.
		f.downLocked(p, "connection lost", 0)
	}
}

// ticker beats every heartbeat until Close.
func (f *Federation) ticker() {
	defer f.wg.Done()
	t := time.NewTicker(f.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case now := <-t.C:
			f.beat(now)
		}
	}
}

// beat declares down the links silent past the link timeout or stalled
// past the stall timeout, sends every up link a heartbeat, and every
// address not linked yet a Hello.
func (f *Federation) beat(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	for _, p := range f.bySession {
		silent := now.Sub(time.Unix(0, p.lastHeard.Load()))
		switch {
		case silent > f.cfg.LinkTimeout:
			f.downLocked(p, fmt.Sprintf("no heartbeat for %v", silent.Round(time.Millisecond)), byeFenced)
		case p.up && p.stalled(now, f.cfg.StallTimeout):
			f.downLocked(p, fmt.Sprintf("nothing acknowledged for %v", f.cfg.StallTimeout), byeFenced)
		case p.up:
			f.send(p.pid, &linkpb.Envelope{Session: f.session, Body: &linkpb.Envelope_Heartbeat{Heartbeat: &linkpb.Heartbeat{}}})
		}
	}
	for addr, refused := range f.dial {
		if p := f.byAddr[addr]; refused != "" || (p != nil && p.up) {
			continue
		}
		var seen uint64
		if p := f.byAddr[addr]; p != nil {
			seen = p.session
		}
		f.hello(actor.NewPID(addr, linkActorName), seen)
	}
}
