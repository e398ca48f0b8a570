package switchboard

import (
	"bytes"
	"cmp"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// The node's side of a federation (ARCHITECTURE.md, "Federation: the
// node's side"; WIRE.md §11). fedState keeps what the other nodes told
// this one (their connections and groups: fedPeer), tells them what
// happens here (the registry's Observer, in the registry's one order), and
// routes this node's traffic to theirs (node_fed_route.go) and theirs to
// this node's connections (node_fed_in.go).
//
// Lock order: fedState.mu, then fedPeer.inMu, then a connection's own
// locks; pmu is a leaf. Federation.Send is called under mu (read or
// write: it must not call back into the host), never under inMu or pmu.

// WithFederation joins the node to a cluster through f: the node calls
// f.Start in Serve, before it accepts a client, and f.Close in Close.
// Without it (the default) the node is alone and costs nothing more.
func WithFederation(f Federation) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if f == nil {
			return errors.New("switchboard: nil federation")
		}
		o.fed = f
		return nil
	})
}

// Limits on what another node may make this one keep.
const (
	fedMaxConns  = 1 << 16 // connections per node
	fedMaxGroups = 1 << 12 // groups per connection
	fedMaxNames  = 1 << 16 // names per node: claimed here, or decided by it
	// Per node, in all: memberships of its connections, distinct groups
	// they are members of, and its requests being served here at once
	// (past it, CODE_TOO_MANY_PENDING).
	fedMaxMemberships = 1 << 18
	fedMaxNodeGroups  = 1 << 16
	fedMaxInFlight    = 1 << 16
)

// FederationStats counts what crossed the node's links, and what it
// refused from them.
type FederationStats struct {
	Nodes     int    // nodes up
	Sent      uint64 // messages handed to the Federation
	SendFails uint64 // messages the Federation refused (node not up, budget spent)
	Received  uint64 // messages delivered by the Federation
	// Malformed: messages that did not decode or did not make sense (an
	// unknown connection, a bad name); dropped, counted and logged.
	Malformed uint64
	// Unknown: messages of a kind this node does not know (a newer
	// node's); ignored.
	Unknown uint64
	// Refused: messages from remote connections the policy refused.
	Refused uint64
	// Late: answers to requests nobody waits for any more.
	Late uint64
	// StaleDecisions: decisions on names from a node that is not the
	// name's arbiter as this node sees the nodes up, or not the one this
	// node's claims went to; ignored.
	StaleDecisions uint64
	// StaleClaims: claims on names this node does not arbitrate, as it
	// sees the nodes up; ignored (the sender sends them again when its
	// view of the nodes changes).
	StaleClaims uint64
	// OverLimit: what a node asked this one to keep past the per-node
	// limits (names claimed or decided, memberships, requests in flight);
	// refused, logged.
	OverLimit uint64
	// NotMember: group requests to a connection that is not a member of
	// the group (it left meanwhile, or the label was false); answered
	// UNDELIVERABLE.
	NotMember uint64
	// Panics: messages whose handling panicked (a bug of this node's on
	// another node's input): the message is lost, logged at error.
	Panics uint64
}

type fedState struct {
	n         *Node
	f         Federation
	self, inc string
	startOnce sync.Once
	startErr  error

	mu    sync.RWMutex
	peers map[string]*fedPeer // the nodes up, by name
	// peerList: peers' values, for what every publication walks (a
	// slice is walked in a few ns, a map is not); changed with peers
	// (setPeerLocked, dropPeerLocked).
	peerList []*fedPeer
	closed   bool

	nextRID    atomic.Uint64
	nextCaller atomic.Uint64
	pmu        sync.Mutex
	pending    map[uint64]*fedPending // this node's requests to remote targets, by rid

	names fedNames // node_fed_names.go

	sent, sendFails, received, malformed, unknown, refused, late, stale atomic.Uint64
	staleClaims, overLimits, panics, notMember                          atomic.Uint64
	log                                                                 logLimiter

	// The per-node limits (fedMax*; tests lower them).
	maxNames, maxMemberships, maxNodeGroups, maxInFlight int
}

// fedPeer is one incarnation of another node, as it told this one.
type fedPeer struct {
	name, inc, prefix string
	out               bool // under mu: this node's state went out; its traffic may follow
	dropped           bool // under mu: no longer the node up under its name (peers)
	stated            bool // under mu: its state came in (conns is what it has)
	conns             map[uint64]*fedConn
	groups            map[string]map[uint64]*fedConn // group → its members there
	memberships       int                            // under mu: its connections' memberships, in all
	caller            *fedCaller                     // stands for its connections as callers here
	inMu              sync.Mutex
	in                map[uint64]*conn.Endpoint // its requests being served here: rid → target
}

// fedConn is a connection on another node.
type fedConn struct {
	id     uint64
	addr   string
	member *pb.Member
	cred   Cred
	groups map[string]bool
}

// fedPending is a request of this node's waiting for a remote answer.
type fedPending struct {
	caller *conn.Endpoint
	call   uint64
	key    uint64
	peer   *fedPeer
}

// fedInit makes the node's federation state, once its registry runs.
func (n *Node) fedInit() {
	if n.o.fed == nil {
		return
	}
	inc := strings.TrimSuffix(strings.TrimPrefix(n.addrPrefix, ":"+n.o.name+"."), ".")
	fs := &fedState{n: n, f: n.o.fed, self: n.o.name, inc: inc, peers: map[string]*fedPeer{}, pending: map[uint64]*fedPending{},
		maxNames: fedMaxNames, maxMemberships: fedMaxMemberships, maxNodeGroups: fedMaxNodeGroups, maxInFlight: fedMaxInFlight}
	n.fed = fs
	n.reg.Groups().SetRemote(fs.remoteMembers)
	n.reg.Observe(fs)
	fs.namesInit()
}

// fedStart starts the federation, once (Serve).
func (n *Node) fedStart() error {
	fs := n.fed
	if fs == nil {
		return nil
	}
	fs.startOnce.Do(func() { fs.startErr = fs.f.Start(fs.self, fs.inc, fs) })
	return fs.startErr
}

// fedClose ends the links (Close), then forgets the other nodes: requests
// waiting on them fail, their connections are announced gone.
func (n *Node) fedClose() {
	fs := n.fed
	if fs == nil {
		return
	}
	fs.mu.Lock()
	fs.closed = true
	fs.mu.Unlock()
	if err := fs.f.Close(); err != nil {
		n.o.logger.Warn("closing the federation", slog.String("error", err.Error()))
	}
	fs.mu.Lock()
	peers := fs.peers
	for _, p := range peers {
		p.dropped = true
	}
	fs.peers, fs.peerList = map[string]*fedPeer{}, nil
	fs.mu.Unlock()
	for _, p := range peers {
		fs.forget(p, "node shutting down")
	}
}

// FederationStats returns the node's federation counters (zero without a
// Federation).
func (n *Node) FederationStats() FederationStats {
	fs := n.fed
	if fs == nil {
		return FederationStats{}
	}
	fs.mu.RLock()
	nodes := len(fs.peers)
	fs.mu.RUnlock()
	return FederationStats{Nodes: nodes, Sent: fs.sent.Load(), SendFails: fs.sendFails.Load(), Received: fs.received.Load(),
		Malformed: fs.malformed.Load(), Unknown: fs.unknown.Load(), Refused: fs.refused.Load(), Late: fs.late.Load(), StaleDecisions: fs.stale.Load(),
		StaleClaims: fs.staleClaims.Load(), OverLimit: fs.overLimits.Load(), Panics: fs.panics.Load(), NotMember: fs.notMember.Load()}
}

// overLimit counts what node asked past a per-node limit, and logs it
// (rate-limited).
func (fs *fedState) overLimit(node, what string) {
	fs.overLimits.Add(1)
	if ok, skipped := fs.log.allow(time.Now()); ok {
		fs.n.o.logger.Warn("federation: over a per-node limit", slog.String("node", node), slog.String("what", what),
			slog.Uint64("not_logged", skipped))
	}
}

// bad counts a message from node that made no sense, and logs it
// (rate-limited).
func (fs *fedState) bad(node, what string) {
	fs.malformed.Add(1)
	if ok, skipped := fs.log.allow(time.Now()); ok {
		fs.n.o.logger.Warn("federation: malformed message", slog.String("node", node), slog.String("what", what),
			slog.Uint64("not_logged", skipped))
	}
}

func encode(m *pb.FedMessage) []byte {
	b, err := gproto.Marshal(m)
	if err != nil {
		panic(err) // our own message: a bug
	}
	return b
}

// sendLocked hands msg to p's link; mu is held (read or write).
func (fs *fedState) sendLocked(p *fedPeer, msg []byte) bool {
	if p.dropped || !p.out {
		fs.sendFails.Add(1)
		return false
	}
	if err := fs.f.Send(p.name, msg); err != nil {
		fs.sendFails.Add(1)
		if r, ok := fs.f.(fedResetter); ok && fedControl(msg) {
			// The other node would be out of step: its session ends,
			// and the next one starts with the state in full.
			r.Reset(p.name, "a control message was refused: "+err.Error())
		}
		return false
	}
	fs.sent.Add(1)
	return true
}

// fedResetter is a Federation that can declare a node's current session
// down (NodeDown, then a new session: NodeUp and the state in full).
// Called under mu: it must not call back into the host.
type fedResetter interface{ Reset(node, reason string) }

// fedControl reports whether an encoded FedMessage is one whose loss
// would leave the other node out of step: anything but a publication, a
// direct message or a request, whose loss their senders are told of.
// The first byte is the tag of its one field (the oneof case; all < 16).
func fedControl(msg []byte) bool {
	if len(msg) == 0 {
		return false
	}
	switch msg[0] >> 3 {
	case 6, 7, 8: // direct, publish, request
		return false
	}
	return true
}

// send hands m to p's link, if p is still up.
func (fs *fedState) send(p *fedPeer, m *pb.FedMessage) bool {
	b := encode(m)
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	return fs.sendLocked(p, b)
}

// broadcast hands m to every node up. On the registry's actor.
func (fs *fedState) broadcast(m *pb.FedMessage) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var b []byte
	for _, p := range fs.peers {
		if !p.out {
			continue
		}
		if b == nil {
			b = encode(m)
		}
		fs.sendLocked(p, bytes.Clone(b)) // Send owns what it is given
	}
}

// The registry's Observer: this node's changes, told to the others in
// the registry's one order.

func fedConnOf(c *conn.Endpoint, groups []string) *pb.FedConn {
	k := c.Cred()
	return &pb.FedConn{Id: c.ID(), ClientName: c.Name(), Uid: k.UID, Gid: k.GID, Pid: k.PID, Groups: groups}
}

func (fs *fedState) Connected(c *conn.Endpoint) {
	fs.broadcast(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: fedConnOf(c, nil)}})
}

func (fs *fedState) Changed(c *conn.Endpoint, group string, joined bool) {
	if reserved(group) { // the node's notices: each node has its own
		return
	}
	m := &pb.FedMembership{Id: c.ID(), Group: group}
	if joined {
		fs.broadcast(&pb.FedMessage{Body: &pb.FedMessage_Join{Join: m}})
	} else {
		fs.broadcast(&pb.FedMessage{Body: &pb.FedMessage_Leave{Leave: m}})
	}
}

func (fs *fedState) Disconnected(c *conn.Endpoint, why pb.DisconnectReason, detail string) {
	fs.broadcast(&pb.FedMessage{Body: &pb.FedMessage_ConnDown{ConnDown: &pb.FedConnDown{Id: c.ID(), Reason: why, Detail: detail}}})
}

// The FederationHost.

// NodeUp: node's incarnation is linked. This node announces it, then (on
// the registry's actor, between two of its announcements) sends it its
// state in full, after which its traffic to that node may go (out). NodeUp
// returns only then: the node's messages, which follow NodeUp, are taken
// once this node's traffic may go to it, so that no connection of it is
// announced here (nor a decision from it taken) while it is up but not
// out. (The registry's actor runs until the Federation is closed, and
// Federation.Send does not wait for the goroutine that calls NodeUp.)
func (fs *fedState) NodeUp(node, inc string) {
	if node == fs.self || checkNodeName(node) != nil || checkNodeName(inc) != nil {
		fs.bad(node, "node up with a bad name or incarnation")
		return
	}
	p := &fedPeer{name: node, inc: inc, prefix: ":" + node + "." + inc + ".",
		conns: map[uint64]*fedConn{}, groups: map[string]map[uint64]*fedConn{}, in: map[uint64]*conn.Endpoint{}}
	p.caller = &fedCaller{fs: fs, p: p, id: 1<<63 | fs.nextCaller.Add(1)}
	fs.mu.Lock()
	if fs.closed {
		fs.mu.Unlock()
		return
	}
	old := fs.peers[node]
	fs.setPeerLocked(p)
	fs.mu.Unlock()
	if old != nil {
		fs.forget(old, "replaced by incarnation "+inc)
		fs.namesMoved(node, old.prefix, "")
	}
	fs.n.notifyLocal(pb.GroupNodes, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NODE_JOINED, Node: node, Incarnation: inc})
	done := make(chan struct{})
	fs.n.reg.Do(func(es []registry.Entry) {
		defer close(done)
		slices.SortFunc(es, func(a, b registry.Entry) int { return cmp.Compare(a.Conn.ID(), b.Conn.ID()) })
		st := &pb.FedState{}
		for _, e := range es {
			st.Conns = append(st.Conns, fedConnOf(e.Conn, slices.DeleteFunc(e.Groups, reserved)))
		}
		b := encode(&pb.FedMessage{Body: &pb.FedMessage_State{State: st}})
		fs.mu.Lock()
		if fs.peers[node] != p {
			fs.mu.Unlock()
			return
		}
		p.out = true
		fs.sendLocked(p, b)
		fs.mu.Unlock()
		fs.namesMoved("", "", node) // after the state: claims name connections it announced
	})
	<-done
}

// NodeDown: node's incarnation is gone.
func (fs *fedState) NodeDown(node, inc, reason string) {
	fs.mu.Lock()
	p := fs.peers[node]
	if p == nil || p.inc != inc {
		fs.mu.Unlock()
		return
	}
	fs.dropPeerLocked(node)
	fs.mu.Unlock()
	fs.forget(p, reason)
	fs.namesMoved(node, p.prefix, "")
}

// forget ends what this node held for p, which is out of the table: its
// requests here are cancelled, this node's requests to it fail with
// PEER_GONE at once, its connections are announced gone (node lost), and
// the node's departure on sys.nodes.
func (fs *fedState) forget(p *fedPeer, reason string) {
	p.inMu.Lock()
	in := p.in
	p.in = map[uint64]*conn.Endpoint{}
	p.inMu.Unlock()
	for rid, to := range in {
		to.ForgetRequest(p.caller, rid, pb.Code_CODE_PEER_GONE)
	}
	var gone []*fedPending
	fs.pmu.Lock()
	for rid, pd := range fs.pending {
		if pd.peer == p {
			gone = append(gone, pd)
			delete(fs.pending, rid)
		}
	}
	fs.pmu.Unlock()
	for _, pd := range gone {
		pd.caller.PostResult(&conn.PeerResult{CallID: pd.call, From: pd.key, Code: pb.Code_CODE_PEER_GONE,
			Payload: []byte("node " + p.name + " lost: " + reason)})
	}
	ids := make([]uint64, 0, len(p.conns))
	for id := range p.conns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fs.connGone(p, p.conns[id], pb.DisconnectReason_DISCONNECT_NODE_LOST, "node "+p.name+" lost: "+reason)
	}
	fs.n.notifyLocal(pb.GroupNodes, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NODE_LEFT, Node: p.name, Incarnation: p.inc, Detail: reason})
}

// connGone forgets a remote connection and announces it: its groups, then
// its end. The caller holds mu for writing, or p is out of the table.
func (fs *fedState) connGone(p *fedPeer, fc *fedConn, why pb.DisconnectReason, detail string) {
	groups := make([]string, 0, len(fc.groups))
	for g := range fc.groups {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		fs.leave(p, fc, g, why)
	}
	delete(p.conns, fc.id)
	fs.n.notifyLocal(pb.GroupConnections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_DISCONNECTED, Member: fc.member, Reason: why, Detail: detail})
}

// join and leave change a remote connection's groups and announce it.
func (fs *fedState) join(p *fedPeer, fc *fedConn, g string) {
	if fc.groups[g] {
		return
	}
	ms := p.groups[g]
	switch {
	case p.memberships >= fs.maxMemberships:
		fs.overLimit(p.name, "too many memberships")
		return
	case ms == nil && len(p.groups) >= fs.maxNodeGroups:
		fs.overLimit(p.name, "too many groups")
		return
	}
	fc.groups[g] = true
	p.memberships++
	if ms == nil {
		ms = map[uint64]*fedConn{}
		p.groups[g] = ms
	}
	ms[fc.id] = fc
	nt := &pb.Notice{Kind: pb.NoticeKind_NOTICE_SUBSCRIBED, Member: fc.member, Group: g}
	fs.n.notifyLocal(pb.GroupGroups, nt)
	fs.n.reg.Groups().NotifyRemote(g, nt)
}

func (fs *fedState) leave(p *fedPeer, fc *fedConn, g string, why pb.DisconnectReason) {
	if !fc.groups[g] {
		return
	}
	delete(fc.groups, g)
	p.memberships--
	if ms := p.groups[g]; ms != nil {
		delete(ms, fc.id)
		if len(ms) == 0 {
			delete(p.groups, g)
		}
	}
	nt := &pb.Notice{Kind: pb.NoticeKind_NOTICE_UNSUBSCRIBED, Member: fc.member, Group: g, Reason: why}
	if why != pb.DisconnectReason_DISCONNECT_UNSPECIFIED {
		nt.Detail = "disconnected"
	}
	fs.n.notifyLocal(pb.GroupGroups, nt)
	fs.n.reg.Groups().NotifyRemote(g, nt)
}

// remoteMembers lists a group's members on the other nodes, by node name
// then id (for member lists).
func (fs *fedState) remoteMembers(g string) []*pb.Member {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var out []*pb.Member
	for _, p := range fs.sortedPeers() {
		for _, fc := range sortedConns(p.groups[g]) {
			out = append(out, fc.member)
		}
	}
	return out
}

// listConns lists the other nodes' connections, by node name then id,
// as Connections lists a node's own (transport "remote", no counters).
func (fs *fedState) listConns() []*pb.ConnectionInfo {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var out []*pb.ConnectionInfo
	for _, p := range fs.sortedPeers() {
		for _, fc := range sortedConns(p.conns) {
			groups := make([]string, 0, len(fc.groups))
			for g := range fc.groups {
				groups = append(groups, g)
			}
			slices.Sort(groups)
			out = append(out, &pb.ConnectionInfo{Member: fc.member, Groups: groups, Transport: "remote"})
		}
	}
	return out
}

// sortedPeers returns the nodes up, by name; mu held.
func (fs *fedState) sortedPeers() []*fedPeer {
	out := make([]*fedPeer, 0, len(fs.peers))
	for _, p := range fs.peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *fedPeer) int { return strings.Compare(a.name, b.name) })
	return out
}

func sortedConns(m map[uint64]*fedConn) []*fedConn {
	out := make([]*fedConn, 0, len(m))
	for _, fc := range m {
		out = append(out, fc)
	}
	slices.SortFunc(out, func(a, b *fedConn) int {
		if a.id < b.id {
			return -1
		}
		if a.id > b.id {
			return 1
		}
		return 0
	})
	return out
}

// notifyLocal publishes a notice to this node's members of a reserved
// group.
func (n *Node) notifyLocal(group string, nt *pb.Notice) {
	ms := n.reg.Groups().Members(group)
	if len(ms) == 0 {
		return
	}
	b, _ := gproto.Marshal(nt)
	body := pb.AppendMsg(nil, "", group, nil, b)
	for _, m := range ms {
		m.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: body}})
	}
}

// checkNodeName checks a node name or incarnation from another node.
func checkNodeName(s string) error { return CheckNodeName(s) }

// parseAddress splits ":NAME.INCARNATION.ID".
func parseAddress(addr string) (node, inc string, id uint64, ok bool) {
	rest, ok := strings.CutPrefix(addr, ":")
	if !ok {
		return "", "", 0, false
	}
	node, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", 0, false
	}
	inc, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", 0, false
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	return node, inc, id, err == nil
}
