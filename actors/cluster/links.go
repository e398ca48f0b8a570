package cluster

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
)

const (
	// retiredKept is how many sessions declared down are remembered, so
	// that a Hello from one is refused (Bye code 2) rather than linked.
	retiredKept = 4096
	// maxDial bounds the addresses learned from Hellos and Byes.
	maxDial = 4096
	// An address not linked is tried (probed, then sent a Hello) after
	// a backoff that doubles from minBackoff to maxBackoff, back to the
	// minimum once a node answers there.
	minBackoff = 250 * time.Millisecond
	maxBackoff = 10 * time.Second
	// learnedKept is how long a learned address (not configured) is kept
	// while nothing is linked there.
	learnedKept = time.Minute
)

// dialAddr is an address this node Hellos until it is linked there.
type dialAddr struct {
	// session is this node's session for its link to the address: drawn
	// anew each time a link there goes down, so that a link is never
	// taken up again once either end declared it down.
	session uint64
	refused string // why the node there refused this one ("" none)
	learned bool   // from a Hello or a Bye, not from Config.Peers
	// discovered: Config.Discovery lists it now (then it is kept, as a
	// configured one is, even when learned first).
	discovered bool
	// viaDiscovery: the discovery brought it (forgotten at once when no
	// longer listed and not linked).
	viaDiscovery bool

	next      time.Time     // when to try it next
	backoff   time.Duration // the wait after the next try
	probing   bool          // a probe is under way
	downSince time.Time     // nothing linked there since

	// The node last linked there, for Links: its name and incarnation,
	// when it was last heard (unix nanoseconds) and why its link ended.
	node, incarnation string
	lastHeard         int64
	downReason        string
}

// dialable reports whether this node may dial addr: any address with
// TLS; without it (plaintext, the secret in every Hello) a loopback one
// only, as Config requires of the peers.
func (f *Federation) dialable(addr string) bool {
	return f.cfg.TLSCert != "" || loopbackAddr(addr)
}

// configured reports whether d is dialled by configuration: listed in
// Config.Peers or, now, by Config.Discovery.
func (d *dialAddr) configured() bool { return !d.learned || d.discovered }

// drawSession returns a random non-zero session.
func drawSession() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails (crypto/rand)
		if s := binary.LittleEndian.Uint64(b[:]); s != 0 {
			return s
		}
	}
}

// local reports whether addr is this node's own: remote delivers what is
// sent there in this process, on the sending goroutine.
func (f *Federation) local(addr string) bool {
	return addr == f.cfg.Advertise || f.system != nil && addr == f.system.Address()
}

// dialLocked returns addr's dial entry, making one if there is room; nil
// when the table is full (or addr is this node's own). f.mu is held.
func (f *Federation) dialLocked(addr string) *dialAddr {
	if f.local(addr) {
		return nil
	}
	d := f.dial[addr]
	if d == nil && len(f.dial) < maxDial {
		d = &dialAddr{session: drawSession(), learned: true, downSince: time.Now()}
		f.dial[addr] = d
	}
	return d
}

// try probes addr with a TCP connection and, if something listens there,
// sends it a Hello: remote is given an address only when it just
// accepted a connection (remote redials a dead address on its own, and
// leaks a gRPC connection each time). The probe runs on its own
// goroutine, owned by f.wg; Close cancels it. f.mu is held.
func (f *Federation) try(addr string, d *dialAddr, now time.Time) {
	d.probing = true
	d.backoff = min(max(2*d.backoff, minBackoff), maxBackoff)
	d.next = now.Add(d.backoff)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		dialer := net.Dialer{Timeout: f.cfg.LinkTimeout}
		c, err := dialer.DialContext(f.ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		d.probing = false
		switch {
		case f.closed || f.dial[addr] != d:
		case err != nil:
			f.stats.dialFails.Add(1)
		case f.byAddr[addr] == nil:
			f.stats.dials.Add(1)
			f.hello(actor.NewPID(addr, linkActorName), d.session, 0)
		}
	}()
}

// localFor is the session this node speaks to addr with. f.mu is held.
func (f *Federation) localFor(addr string) uint64 {
	if p := f.byAddr[addr]; p != nil {
		return p.local
	}
	if d := f.dial[addr]; d != nil {
		return d.session
	}
	return drawSession()
}

// silent reports whether p has said nothing for longer than the link
// timeout.
func (f *Federation) silent(p *peer, now time.Time) bool {
	// A reader delivering in place reads nothing meanwhile: the host
	// holds the link up, as a delivery goroutine's would (the other node
	// sees its acknowledgements stall).
	return !p.inPlace.Load() && now.Sub(time.Unix(0, p.lastHeard.Load())) > f.cfg.LinkTimeout
}

// onHello handles a Hello: it opens a link, completes one, or refuses.
//
// The exchange: each node sends Hello{seen: 0} to each address it dials,
// every heartbeat until the link is up, from its session for that
// address. A node receiving a Hello from a session it has not seen
// records the peer and answers Hello{seen: that session}; a Hello that
// names the receiver's own session as seen completes the link on the
// receiver's side (it comes up, and answers once so that the other side
// completes too). Data follows a node's completing Hello on the same
// ordered stream, so it never arrives before its receiver is up.
func (f *Federation) onHello(session uint64, h *linkpb.Hello) {
	if err := checkHello(h); err != nil || session == 0 {
		f.stats.protocol.Add(1)
		return // no trustworthy address to answer
	}
	if f.local(h.Address) {
		// This node's own address: an answer would come straight back
		// to it, on this goroutine, under mu. Nobody honest sends it.
		f.stats.protocol.Add(1)
		return
	}
	pid := actor.NewPID(h.Address, linkActorName)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if !f.dialable(h.Address) {
		// Linking would mean dialling it in the clear with the secret;
		// not answered either (an answer dials it too).
		f.stats.protocol.Add(1)
		f.limitedf(&f.logs.plain, "cluster: ignored node %s (%s): it advertises %s, not a loopback address, and this node has no TLS", h.Node, h.Incarnation, h.Address)
		return
	}
	refuse := func(code uint32, format string, args ...any) {
		reason := fmt.Sprintf(format, args...)
		f.stats.refusedOut.Add(1)
		// A Hello without the secret, which anyone who reaches the
		// port can send naming any address, has a log limit of its own
		// (a flood of them would hide the refusals of nodes that know
		// the secret), and the Bye that says why goes only to an
		// address this node dials anyway (answering another would make
		// remote dial it, and keep dialling one that is dead).
		l, answer := &f.logs.refusedOut, true
		if code == byeSecret {
			l, answer = &f.logs.badSecret, f.dial[h.Address] != nil
		}
		f.limitedf(l, "cluster: refused node %s (%s) at %s: %s", h.Node, h.Incarnation, h.Address, reason)
		if answer {
			f.bye(pid, f.localFor(h.Address), session, code, reason)
		}
	}
	switch {
	case f.secret != nil && subtle.ConstantTimeCompare(h.Secret, f.secret) != 1:
		f.stats.badSecret.Add(1)
		refuse(byeSecret, "it does not know the cluster's secret")
		return
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
	if _, ok := f.retired[session]; ok {
		refuse(byeFenced, "its session was declared down: it must link again as a new session")
		return
	}
	p := f.bySession[session]
	now := time.Now()
	if p == nil {
		if q := f.byName[h.Node]; q != nil {
			if q.addr != h.Address {
				refuse(byeDuplicate, "node name %q is taken by the node at %s", h.Node, q.addr)
				return
			}
			if !f.silent(q, now) {
				// Anyone can claim a name and an address in a Hello:
				// only a session that went quiet gives way to another.
				refuse(byeDuplicate, "node %q is linked in another session, which is alive", h.Node)
				return
			}
			f.downLocked(q, "the node linked again in a new session", byeFenced)
		}
		if q := f.byAddr[h.Address]; q != nil {
			if !f.silent(q, now) {
				refuse(byeDuplicate, "node %q answers at %s, and is alive", q.name, h.Address)
				return
			}
			f.downLocked(q, "another node now answers at its address", byeFenced)
		}
		local := drawSession()
		if d := f.dialLocked(h.Address); d != nil {
			local = d.session // dial it (again) until linked
			d.refused = ""
			d.node, d.incarnation = h.Node, h.Incarnation
		}
		p = newPeer(f, session, local, h)
		if d := f.dial[h.Address]; d != nil {
			d.backoff, d.next = 0, time.Time{} // a node answers there
		}
		f.bySession[session], f.byName[h.Node], f.byAddr[h.Address] = p, p, p
		f.setNamesLocked()
	} else if p.name != h.Node || p.incarnation != h.Incarnation || p.addr != h.Address {
		f.stats.protocol.Add(1)
		f.downLocked(p, "link protocol error: its Hello changed who it is", byeProtocol)
		return
	}
	p.heard()
	wasUp := p.up
	if h.Seen == p.local && !p.up {
		p.up = true
		f.logf("cluster: node %s (%s) at %s is up", p.name, p.incarnation, p.addr)
		prev := f.lastRun[p.name]
		f.lastRun[p.name] = p.exited
		f.wg.Add(1)
		go p.run(prev)
	}
	if h.Seen != p.local || !wasUp {
		f.hello(p.pid, p.local, session)
	}
}

// onBye handles a Bye: the sender ends our link, or refuses us.
func (f *Federation) onBye(session uint64, b *linkpb.Bye) {
	reason := b.Reason
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var d *dialAddr
	p := f.bySession[session]
	if checkAddr(b.Address) == nil {
		d = f.dial[b.Address]
		if q := f.byAddr[b.Address]; (p == nil || p.local != b.To) && q != nil && q.local == b.To {
			// A refusal of our link there, sent from the session the
			// other end has now (it retired the one we knew).
			p = q
		}
	}
	ours := d != nil && d.session == b.To
	switch {
	case p != nil && p.local == b.To:
		f.downLocked(p, "the node said bye: "+reason, 0)
	case !ours:
		f.stats.stale.Add(1) // meant for another session of this node's
		return
	}
	if d == nil {
		return
	}
	if b.Code == byeFenced && d.session == b.To {
		// That session is over at the other end: Hello again as a
		// new one.
		d.session = drawSession()
	}
	if refusal(b.Code) {
		d.refused = reason
		f.stats.refusedIn.Add(1)
		f.limitedf(&f.logs.refusedIn, "cluster: the node at %s refused this one: %s", b.Address, reason)
	}
}

// declareDown ends p's link for good.
func (f *Federation) declareDown(p *peer, reason string, code uint32) {
	f.mu.Lock()
	f.downLocked(p, reason, code)
	f.mu.Unlock()
}

// Reset declares node's current session down, as if its link had failed:
// the host hears NodeDown, the node there is told (Bye code 2), and the
// two link again as a new session, whose NodeUp follows (the host resends
// its state). The host calls it when the link refused a message it cannot
// do without (the node would be out of step otherwise); a session whose
// NodeUp the host has not heard yet is left alone: the host's failure was
// on an earlier one, already down. It never calls the host itself.
func (f *Federation) Reset(node, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.byName[node]
	if f.closed || p == nil || !p.announced.Load() {
		return
	}
	f.stats.resets.Add(1)
	f.downLocked(p, "reset: "+reason, byeFenced)
}

// downLocked ends p's link: nothing more from its session is delivered
// (the session is retired: its envelopes are stale, its Hellos refused),
// this node's session for p's address is drawn anew, and p's delivery
// goroutine tells the host. With a code, p is told why (best effort).
// f.mu is held.
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
		f.setNamesLocked()
	}
	if f.byAddr[p.addr] == p {
		delete(f.byAddr, p.addr)
	}
	if _, ok := f.retired[p.session]; !ok {
		if len(f.retiredOrder) == retiredKept {
			delete(f.retired, f.retiredOrder[0])
			f.retiredOrder = f.retiredOrder[1:]
		}
		f.retired[p.session] = struct{}{}
		f.retiredOrder = append(f.retiredOrder, p.session)
	}
	if d := f.dial[p.addr]; d != nil && d.session == p.local {
		d.session = drawSession()
		d.downSince = time.Now()
		d.lastHeard, d.downReason = p.lastHeard.Load(), reason
	}
	if p.up {
		f.logf("cluster: node %s (%s) at %s is down: %s", p.name, p.incarnation, p.addr, reason)
	}
	close(p.done)
	if code != 0 {
		f.bye(p.pid, p.local, p.session, code, reason)
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
	f.lost.Range(func(addr, at any) bool {
		f.lost.Delete(addr)
		// Not a link made since (a new session there is not the one
		// whose message was lost).
		if p := f.byAddr[addr.(string)]; p != nil && p.created.Before(at.(time.Time)) {
			f.downLocked(p, "remote dropped messages for it: no connection", 0)
		}
		return true
	})
	for _, p := range f.bySession {
		switch {
		case f.silent(p, now):
			silent := now.Sub(time.Unix(0, p.lastHeard.Load()))
			f.downLocked(p, fmt.Sprintf("no heartbeat for %v", silent.Round(time.Millisecond)), byeFenced)
		case p.up && p.stalled(now, f.cfg.StallTimeout):
			f.downLocked(p, fmt.Sprintf("nothing acknowledged for %v", f.cfg.StallTimeout), byeFenced)
		case p.up && p.batch:
			f.send(p.pid, &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Heartbeat{Heartbeat: &linkpb.Heartbeat{Ack: p.inSeq.Load()}}})
		case p.up:
			f.send(p.pid, &linkpb.Envelope{Session: p.local, Body: &linkpb.Envelope_Heartbeat{Heartbeat: &linkpb.Heartbeat{}}})
		}
	}
	f.dialPass(now)
	f.flushLogs(now)
	if f.disc.short {
		f.foundLocked(f.disc.last, now)
	}
}

// dialPass sends a Hello to every address linking, starts a probe of
// every address not linked whose backoff ran out, and forgets the learned
// addresses not linked for learnedKept. f.mu is held.
func (f *Federation) dialPass(now time.Time) {
	for addr, d := range f.dial {
		p := f.byAddr[addr]
		switch {
		case p != nil && p.up:
		case p != nil: // linking: it answered
			f.hello(p.pid, p.local, p.session)
		case d.learned && !d.discovered && now.Sub(d.downSince) > learnedKept:
			delete(f.dial, addr) // learned, and gone for a while
		case d.refused != "" || d.probing || now.Before(d.next):
		default:
			f.try(addr, d, now)
		}
	}
}

// setNamesLocked publishes a copy of byName for Send (names); mu is held
// for writing. Nodes link and go rarely: a copy each time is cheap.
func (f *Federation) setNamesLocked() {
	m := make(map[string]*peer, len(f.byName))
	for name, p := range f.byName {
		m[name] = p
	}
	f.names.Store(&m)
}
