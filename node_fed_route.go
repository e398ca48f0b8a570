package switchboard

import (
	"fmt"
	"slices"
	"strings"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// This node's traffic to connections on other nodes, on the sender's pump
// (from route): one link per node, so a sender's messages, publications
// and requests to one node keep their order.

// fedDest returns the address on another node a message or request to
// dest goes to: dest itself, an address of another node; or the owner of
// the name dest when the owner is on another node; "" otherwise.
func (n *Node) fedDest(dest string) string {
	if n.fed == nil || len(dest) == 0 {
		return ""
	}
	if dest[0] == ':' {
		if strings.HasPrefix(dest, n.addrPrefix) {
			return ""
		}
		return dest
	}
	return n.reg.RemoteOwner(dest)
}

// fedRoute sends a message or request to an address on another node (to
// dest, that address or a name it owns): undeliverable, as locally, if
// that node is not up or has no such connection. The policy is asked for
// dest and, for a name, its owner's address, as resolve does.
func (n *Node) fedRoute(c *conn.Endpoint, f conn.BusFrame, dest, d string, payload []byte, wantAnswer bool, fail func(error)) {
	for _, target := range []string{dest, d}[:1+boolInt(dest != d)] {
		if err := n.allow(credOf(c.Cred()), ActionSend, target); err != nil {
			fail(codeError(pb.Code_CODE_REFUSED, err.Error()))
			return
		}
	}
	fs := n.fed
	fs.mu.RLock()
	p, fc := fs.lookup(d)
	if fc == nil {
		fs.mu.RUnlock()
		fail(codeError(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("nobody at %q", d)))
		return
	}
	name := "" // the name dest, which the receiving node's policy is asked for too
	if dest != d {
		name = dest
	}
	if f.Kind == pb.KindPeerSend && !wantAnswer {
		ok := fs.sendLocked(p, encode(&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: c.ID(), To: fc.id, Payload: payload, Name: name}}}))
		fs.mu.RUnlock()
		if ok {
			n.delivered.Add(1)
			n.copyToMonitors(c, f.Kind, d, nil, payload)
		} else {
			n.undeliverable.Add(1)
		}
		return
	}
	t := fs.target(p, fc, d, payload, f.Kind == pb.KindPeerSend)
	t.name = name
	fs.mu.RUnlock()
	n.delivered.Add(1)
	n.copyToMonitors(c, f.Kind, d, nil, payload)
	// A message that wants an answer waits for the other node's word, as a
	// request does; its answer is the count delivered.
	c.StartRequestRemote(f.ID, f.Aux, false, nil, []conn.Remote{t}, nil)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lookup finds the node and connection of a remote address; mu held.
func (fs *fedState) lookup(addr string) (*fedPeer, *fedConn) {
	node, inc, id, ok := parseAddress(addr)
	if !ok {
		return nil, nil
	}
	p := fs.peers[node]
	if p == nil || p.inc != inc || !p.out {
		return nil, nil
	}
	return p, p.conns[id]
}

// fedGroup is a group's membership on the other nodes, as this node was
// told: the nodes with members (the first fedFew of them, by value: a
// publication allocates no list), and how many members in all.
type fedGroup struct {
	few   [fedFew]*fedPeer
	nodes int // nodes with members; past fedFew, publish looks them up again
	count int
}

const fedFew = 4

// group returns g's remote membership. A group without remote members
// costs a read lock and a map lookup per node; none allocates.
func (fs *fedState) group(g string) fedGroup {
	var r fedGroup
	fs.mu.RLock()
	for _, p := range fs.peerList {
		if n := p.members(g); n > 0 {
			if r.nodes < fedFew {
				r.few[r.nodes] = p
			}
			r.nodes++
			r.count += n
		}
	}
	fs.mu.RUnlock()
	return r
}

// members is how many members of g node p has that this node sends to
// (0 while p's link is not out); mu held.
func (p *fedPeer) members(g string) int {
	if !p.out {
		return 0
	}
	return len(p.groups[g])
}

// publish sends a publication once to each node with members; it returns
// how many members the nodes that took it had (took), and how many the
// nodes whose links refused it had (lost: the link's budget spent, or the
// node going; counted in SendFails).
func (fs *fedState) publish(c *conn.Endpoint, g string, rg fedGroup, payload []byte) (took, lost int) {
	if rg.count == 0 {
		return 0, 0
	}
	b := appendFedPublish(nil, c.ID(), g, payload)
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	send := func(p *fedPeer, last bool) {
		msg := b
		if !last {
			msg = append([]byte(nil), b...) // Send owns what it is given
		}
		if fs.sendLocked(p, msg) {
			took += len(p.groups[g])
		} else {
			lost += len(p.groups[g])
		}
	}
	if rg.nodes <= fedFew {
		for i, p := range rg.few[:rg.nodes] {
			send(p, i == rg.nodes-1)
		}
		return took, lost
	}
	var prev *fedPeer // more nodes than group kept: those with members now
	for _, p := range fs.peerList {
		if p.members(g) > 0 {
			if prev != nil {
				send(prev, false)
			}
			prev = p
		}
	}
	if prev != nil {
		send(prev, true)
	}
	return took, lost
}

// targets returns the stand-ins for g's remote members, for a group
// request: by node name, then id.
func (fs *fedState) targets(g string, rg fedGroup, payload []byte) []conn.Remote {
	if rg.count == 0 {
		return nil
	}
	out := make([]conn.Remote, 0, rg.count)
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	for _, p := range fs.sortedPeers() {
		for _, fc := range sortedConns(p.groups[g]) {
			out = append(out, fs.target(p, fc, g, payload, false))
		}
	}
	return out
}

// target makes the stand-in for one remote connection as a request's
// target (direct: a message that wants an answer).
func (fs *fedState) target(p *fedPeer, fc *fedConn, dest string, payload []byte, direct bool) *fedTarget {
	return &fedTarget{fs: fs, p: p, to: fc.id, addr: fc.addr, dest: dest, payload: payload, direct: direct, rid: fs.nextRID.Add(1)}
}

// fedTarget is a remote connection as the target of one request
// (conn.Remote).
type fedTarget struct {
	fs         *fedState
	p          *fedPeer
	to         uint64
	addr, dest string
	name       string // the well-known name the caller addressed, or ""
	payload    []byte // valid until Ask returns (route's frame)
	direct     bool
	rid        uint64
}

func (t *fedTarget) Key() uint64     { return 1<<63 | t.rid }
func (t *fedTarget) Address() string { return t.addr }

// Ask sends the request; its answer (or the node's loss) completes the
// caller's call.
func (t *fedTarget) Ask(caller *conn.Endpoint, call uint64, aux uint32) bool {
	fs := t.fs
	fs.pmu.Lock()
	fs.pending[t.rid] = &fedPending{caller: caller, call: call, key: t.Key(), peer: t.p}
	fs.pmu.Unlock()
	var m *pb.FedMessage
	if t.direct {
		m = &pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: caller.ID(), To: t.to, Payload: t.payload, Rid: t.rid, Name: t.name}}}
	} else {
		m = &pb.FedMessage{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: t.rid, From: caller.ID(), To: t.to,
			Dest: t.dest, DeadlineUs: aux, Payload: t.payload, Name: t.name}}}
	}
	t.payload = nil
	if fs.send(t.p, m) {
		return true
	}
	fs.pmu.Lock()
	_, still := fs.pending[t.rid]
	delete(fs.pending, t.rid)
	fs.pmu.Unlock()
	return !still // the node went down meanwhile and answered PEER_GONE: not twice
}

// Forget cancels the request on the other node if it is still waited for.
func (t *fedTarget) Forget(_ *conn.Endpoint, _ uint64, why pb.Code) {
	fs := t.fs
	fs.pmu.Lock()
	_, waiting := fs.pending[t.rid]
	delete(fs.pending, t.rid)
	fs.pmu.Unlock()
	if waiting {
		fs.send(t.p, &pb.FedMessage{Body: &pb.FedMessage_Cancel{Cancel: &pb.FedCancel{Rid: t.rid, Code: why}}})
	}
}

// setPeerLocked makes p the node up under its name; mu is held for
// writing.
func (fs *fedState) setPeerLocked(p *fedPeer) {
	fs.dropPeerLocked(p.name)
	fs.peers[p.name] = p
	fs.peerList = append(fs.peerList, p)
}

// dropPeerLocked forgets the node up under name, if any; mu is held for
// writing.
func (fs *fedState) dropPeerLocked(name string) {
	p := fs.peers[name]
	if p == nil {
		return
	}
	p.dropped = true
	delete(fs.peers, name)
	fs.peerList = slices.DeleteFunc(fs.peerList, func(p *fedPeer) bool { return p.name == name })
}
