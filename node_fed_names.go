package switchboard

import (
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Names across the cluster (ARCHITECTURE.md, "Names across nodes"). One
// node arbitrates each name: the highest rendezvous hash of (name, node
// name) among the nodes up, as each node sees them. Every node sends the
// arbiter its claimants of the name (FedClaims, state, not deltas: the
// arbiter keeps nothing it cannot rebuild) whenever they change and
// whenever the arbiter moves; the arbiter decides the queue, owner first,
// and tells every node (FedNameOwner), whose registry applies it. In a
// partition each side arbitrates for itself (available); when it heals,
// the claims meet at one arbiter again and the owner with the smallest
// address keeps the name (a deterministic merge), the other hears
// NAME_LOST.
//
// Lock order: fedNames.mu, then fedState.mu (sends take it).

type fedNames struct {
	mu     sync.Mutex
	mine   map[string]*pb.FedClaims // this node's claims, by name, as last sent
	sentTo map[string]string        // name → the arbiter they went to
	// pend: node → names a resync listed with an owner on that node
	// while this node, their arbiter, knew nothing of its connections
	// (not up, or its state not come): asked of it when its state comes
	// (namesStated), each with the nodes whose resyncs listed it; at
	// most resyncAnswers per such node (pendBy), whose share goes when it
	// leaves (a name goes with its last asker): a peer's resyncs naming a
	// node that never comes fill its own share only.
	pend   map[string]map[string][]string
	pendBy map[string]int
	// askedBy: name → the nodes that asked for this node's claims on it
	// (FedClaimsAsk) without being its arbiter as this node sees the
	// nodes up; they hear each change of them too, until this node
	// claims the name no more or they leave.
	askedBy map[string]map[string]bool
	arb     map[string]*arbName // the names this node arbitrates
	decided map[string]decided  // the decisions applied here, by name (none: no queue)
	// What each other node makes this one keep, by node: the names it
	// claims here (claimed) and the names whose decision came from it
	// (by); at most fedState.maxNames each, past which its claims and
	// decisions on new names are refused (FederationStats.OverLimit).
	claimed, by map[string]int
}

// decided is the last decision applied on a name, and the node it came
// from ("" for this node's own, or for a queue it cut itself when a node
// was lost).
type decided struct {
	queue []string
	from  string
}

// arbName is one name as its arbiter knows it.
type arbName struct {
	claims   map[string][]string // node → its claimants' addresses, in order
	owners   map[string]string   // node → the claimant it holds as owner
	believed map[string]string   // node → the owner it last heard of
	heard    map[string]bool     // nodes whose claims came since this node arbitrates the name
	asked    map[string]bool     // nodes asked for their claims (FedClaimsAsk) while not heard
	live     map[string]bool     // node → its believed owner is live as it sees the nodes (believed_live)
	queue    []string            // the decision, owner first
}

// fedNamesInit hands the registry's names to the arbiters.
func (fs *fedState) namesInit() {
	fs.names = fedNames{mine: map[string]*pb.FedClaims{}, sentTo: map[string]string{}, askedBy: map[string]map[string]bool{}, pend: map[string]map[string][]string{}, pendBy: map[string]int{}, arb: map[string]*arbName{},
		decided: map[string]decided{}, claimed: map[string]int{}, by: map[string]int{}}
	fs.n.reg.Arbitrate(fs, fs.n.addrPrefix)
}

// arbiterOf returns the node that arbitrates name, among this node and
// the nodes up (their state sent).
func (fs *fedState) arbiterOf(name string) string {
	score := func(node string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write([]byte(node))
		return h.Sum64()
	}
	best, bs := fs.self, score(fs.self)
	fs.mu.RLock()
	for name, p := range fs.peers {
		if !p.out {
			continue
		}
		if s := score(name); s > bs || s == bs && name < best {
			best, bs = name, s
		}
	}
	fs.mu.RUnlock()
	return best
}

// Claims is the registry's Arbiter: this node's claimants of name changed.
//
// A claimant is held as owner (FedClaim.owner, which the arbiter's merge
// of a healed partition weighs) only if an arbiter's decision made it
// owner while it claimed (believe) and it has claimed ever since: not by
// the registry's word (owner, which applies decisions later than this
// side hears them: a claimant that released the name and claimed it again
// before the registry applied the next decision would take the name back),
// and not by this node's own cut of a lost node's addresses (namesMoved:
// the arbiter may still see that node, and its owner).
func (fs *fedState) Claims(name string, claimants []*conn.Endpoint, _ *conn.Endpoint) {
	nm := &fs.names
	nm.mu.Lock()
	defer nm.mu.Unlock()
	old := nm.mine[name]
	m := &pb.FedClaims{Name: name}
	for _, c := range claimants {
		held := false
		for _, o := range old.GetClaims() {
			if o.GetId() == c.ID() {
				held = o.GetOwner()
				break
			}
		}
		m.Claims = append(m.Claims, &pb.FedClaim{Id: c.ID(), Owner: held})
	}
	if old != nil {
		m.BelievedOwner = old.BelievedOwner
	} else if d, ok := nm.decided[name]; ok {
		// This node's first claims on a name decided elsewhere: it
		// believes in the owner it applied, so that an arbiter that has
		// not heard the owner's node yet waits for it (a new arbiter
		// asks for claims when it takes over; this node's may come
		// first).
		m.BelievedOwner = first(d.queue)
	}
	nm.mine[name] = m
	fs.sendClaims(m)
	for node := range nm.askedBy[name] {
		if p := fs.peer(node); p != nil && node != nm.sentTo[name] {
			fs.send(p, &pb.FedMessage{Body: &pb.FedMessage_Claims{Claims: m}})
		}
	}
	if len(m.Claims) == 0 {
		delete(nm.mine, name)
		delete(nm.sentTo, name)
		delete(nm.askedBy, name)
	}
}

// sendClaims sends m to its name's arbiter (this node's own: at once);
// names.mu held.
func (fs *fedState) sendClaims(m *pb.FedClaims) {
	m.BelievedLive = fs.believedLive(m.GetBelievedOwner())
	to := fs.arbiterOf(m.Name)
	fs.names.sentTo[m.Name] = to
	if to == fs.self {
		fs.arbClaims(fs.self, m)
		return
	}
	fs.mu.RLock()
	p := fs.peers[to]
	fs.mu.RUnlock()
	if p != nil {
		fs.send(p, &pb.FedMessage{Body: &pb.FedMessage_Claims{Claims: m}})
	}
}

// claimsIn takes another node's claims, for a name this node arbitrates.
func (fs *fedState) claimsIn(node string, m *pb.FedClaims) {
	if checkName(m.GetName()) != nil || len(m.GetClaims()) > fedMaxConns {
		fs.bad(node, "claims on a bad name")
		return
	}
	fs.mu.RLock()
	p := fs.peers[node]
	ok := p != nil
	for _, c := range m.GetClaims() {
		ok = ok && p.conns[c.GetId()] != nil
	}
	fs.mu.RUnlock()
	if !ok {
		fs.bad(node, "claims of unknown connections")
		return
	}
	if fs.arbiterOf(m.GetName()) != fs.self {
		// Not a name this node arbitrates, as it sees the nodes up: the
		// sender's view differs (a node coming or going); it sends its
		// claims again where its view moves them.
		fs.staleClaims.Add(1)
		return
	}
	fs.names.mu.Lock()
	defer fs.names.mu.Unlock()
	if a := fs.names.arb[m.GetName()]; (a == nil || a.claims[node] == nil) && len(m.GetClaims()) > 0 && fs.names.claimed[node] >= fs.maxNames {
		fs.overLimit(node, "claims on too many names")
		return
	}
	fs.arbClaims(node, m)
}

// arbClaims records node's claims on a name and decides; names.mu held.
func (fs *fedState) arbClaims(node string, m *pb.FedClaims) {
	a := fs.names.arb[m.Name]
	if a == nil {
		a = &arbName{claims: map[string][]string{}, owners: map[string]string{}, believed: map[string]string{}, heard: map[string]bool{}, asked: map[string]bool{}, live: map[string]bool{}}
		fs.names.arb[m.Name] = a
	}
	prefix := fs.prefixOf(node)
	if prefix == "" {
		return
	}
	var addrs []string
	a.heard[node] = true
	delete(a.owners, node)
	for _, c := range m.GetClaims() {
		addr := prefix + strconv.FormatUint(c.GetId(), 10)
		addrs = append(addrs, addr)
		if c.GetOwner() {
			a.owners[node] = addr
		}
	}
	if len(addrs) == 0 {
		fs.unclaim(a, node)
	} else {
		if a.claims[node] == nil && node != fs.self {
			fs.names.claimed[node]++
		}
		a.claims[node] = addrs
		a.believed[node] = m.GetBelievedOwner()
		a.live[node] = m.GetBelievedLive()
	}
	if !fs.arbDecide(m.Name, a) && node != fs.self && len(a.queue) > 0 {
		// Unchanged: the sender hears the decision all the same (it may
		// have ignored it from here while its view of the nodes differed).
		if p := fs.peer(node); p != nil {
			fs.send(p, &pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: m.Name, Queue: a.queue}}})
		}
	}
}

// peer returns node's fedPeer if it is up, or nil.
func (fs *fedState) peer(node string) *fedPeer {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	return fs.peers[node]
}

// unclaim drops node's claims on a's name; names.mu held.
func (fs *fedState) unclaim(a *arbName, node string) {
	if a.claims[node] == nil {
		return
	}
	delete(a.claims, node)
	delete(a.believed, node)
	delete(a.live, node)
	if nm := &fs.names; node != fs.self {
		if nm.claimed[node]--; nm.claimed[node] <= 0 {
			delete(nm.claimed, node)
		}
	}
}

// ownerLives reports whether addr, a connection of another node, lives:
// as that node told this one once its state came here, else as a
// claimant's word (claimantSays).
func (fs *fedState) ownerLives(addr string, claimantSays bool) bool {
	node, inc, _, ok := parseAddress(addr)
	if !ok {
		return false
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	if p := fs.peers[node]; p == nil || !p.out || !p.stated {
		return claimantSays && (p == nil || p.inc == inc)
	}
	_, fc := fs.lookup(addr)
	return fc != nil
}

// believedLive reports whether addr, the owner this node believes in,
// is a live connection, of this node or of a node up here.
func (fs *fedState) believedLive(addr string) bool {
	if addr == "" {
		return false
	}
	if strings.HasPrefix(addr, fs.n.addrPrefix) {
		return fs.n.lookupAddress(addr) != nil
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	_, fc := fs.lookup(addr)
	return fc != nil
}

// prefixOf returns the address prefix of node ("" if it is not up).
func (fs *fedState) prefixOf(node string) string {
	if node == fs.self {
		return fs.n.addrPrefix
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	if p := fs.peers[node]; p != nil {
		return p.prefix
	}
	return ""
}

// arbDecide decides name's queue from the claims, and tells every node if
// it changed; names.mu held. The owner is the current owner if it still
// claims, or a claimant its node holds as owner: when there are several
// (a partition healed), the smallest address; else, while a node up here
// that has not sent its claims yet is believed to hold the owner, one of
// its live connections, nothing is decided; else the first
// standby still claiming; else the first claimant.
// It reports whether it decided anew or waits (false: the queue is
// unchanged).
func (fs *fedState) arbDecide(name string, a *arbName) bool {
	claimed := map[string]bool{}
	nodes := make([]string, 0, len(a.claims))
	for node, addrs := range a.claims {
		nodes = append(nodes, node)
		for _, addr := range addrs {
			claimed[addr] = true
		}
	}
	slices.Sort(nodes)
	// The claimants their nodes hold as owner: more than one is a
	// partition healing, and the smallest address keeps the name.
	owner := ""
	if cur := first(a.queue); claimed[cur] {
		owner = cur
	}
	for _, o := range a.owners {
		if claimed[o] && (owner == "" || o < owner) {
			owner = o
		}
	}
	if owner == "" {
		for claimant, b := range a.believed {
			if b == "" || claimed[b] {
				continue
			}
			// Wait for the claims of the node believed to hold the owner
			// while the owner lives: as that node told this one, once its
			// state came; before, as the claimant saw it (a new or
			// restarted arbiter may hear the standbys' nodes first). A
			// belief in an owner that closed, or on a node gone, waits
			// for nothing: nothing would end the wait. The node waited
			// for is asked for its claims, which it sends here whichever
			// node it sees as the arbiter: one whose view of the nodes
			// differs (a partial partition) would otherwise send them
			// elsewhere, and the wait would last until the views agree.
			if node, _, _, ok := parseAddress(b); ok && node != fs.self && !a.heard[node] && fs.ownerLives(b, a.live[claimant]) {
				fs.askClaims(name, a, node)
				return true
			}
		}
	}
	if owner == "" && !slices.ContainsFunc(a.queue, func(q string) bool { return claimed[q] }) {
		// No claimant held as owner, none waited for, and none of the
		// queue this arbiter decided (a new arbiter: none): the
		// claimant the nodes believe in, if one still claims (each
		// node's cut of a lost node's addresses makes the next standby
		// its belief, not its flag), the smallest address if they
		// differ. A queue of this arbiter's own goes first: a node's
		// belief changes here only with its next claims, so it may be
		// stale.
		for _, b := range a.believed {
			if claimed[b] && (owner == "" || b < owner) {
				owner = b
			}
		}
	}
	// The queue: the owner, the standbys in their old order, then the new
	// claimants by node; claimed doubles as the set of those not placed
	// yet (one pass, not a search per claimant).
	queue := make([]string, 0, len(claimed))
	place := func(addr string) {
		if claimed[addr] {
			delete(claimed, addr)
			queue = append(queue, addr)
		}
	}
	if owner != "" {
		place(owner)
	}
	for _, addr := range a.queue {
		place(addr)
	}
	for _, node := range nodes {
		for _, addr := range a.claims[node] {
			place(addr)
		}
	}
	changed := !slices.Equal(queue, a.queue) || len(queue) == 0
	if !changed && slices.Equal(fs.names.decided[name].queue, queue) {
		return false
	}
	// A new decision; or the same one again, here and everywhere, when
	// this node applied its own cut of a lost node's addresses meanwhile
	// (namesMoved) while its decision stood (so does any other node that
	// cut them).
	a.queue = queue
	if len(queue) == 0 {
		delete(fs.names.arb, name)
	}
	fs.broadcast(&pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: name, Queue: queue}}})
	fs.applyDecision(name, queue, "")
	fs.names.believe(name, first(queue), fs.n.addrPrefix, true)
	return changed
}

// nameOwnerIn takes an arbiter's decision.
func (fs *fedState) nameOwnerIn(node string, m *pb.FedNameOwner) {
	if checkName(m.GetName()) != nil || len(m.GetQueue()) > fedMaxConns {
		fs.bad(node, "a decision on a bad name")
		return
	}
	for _, a := range m.GetQueue() {
		if _, _, _, ok := parseAddress(a); !ok || len(a) > pb.MaxNameLen {
			fs.bad(node, "a decision with a bad address")
			return
		}
	}
	nm := &fs.names
	nm.mu.Lock()
	defer nm.mu.Unlock()
	name := m.GetName()
	if mine := nm.mine[name]; m.GetCatchUp() && mine != nil {
		// Its claims bring the decision that counts: sent again to the
		// arbiter, which answers them (its decision may have missed this
		// node while their views differed).
		if fs.arbiterOf(name) == node {
			fs.sendClaims(mine)
		}
		return
	}
	if fs.arbiterOf(name) != node || nm.mine[name] != nil && nm.sentTo[name] != node {
		// Not the name's arbiter as this node sees the nodes up, or not
		// where this node's claims went: a decision without them (an
		// arbiter that moved, the other half of a partition healing).
		fs.stale.Add(1)
		return
	}
	if d, ok := nm.decided[name]; (!ok || d.from != node) && len(m.GetQueue()) > 0 && nm.by[node] >= fs.maxNames {
		fs.overLimit(node, "decisions on too many names")
		return
	}
	fs.applyDecision(name, m.GetQueue(), node)
	nm.believe(name, first(m.GetQueue()), fs.n.addrPrefix, true)
}

// applyDecision hands a decision (from: the node that made it, "" for
// this one) to the registry, with the owner's member, and records it;
// names.mu held.
func (fs *fedState) applyDecision(name string, queue []string, from string) {
	nm := &fs.names
	if old, ok := nm.decided[name]; ok && old.from != "" {
		if nm.by[old.from]--; nm.by[old.from] <= 0 {
			delete(nm.by, old.from)
		}
	}
	if len(queue) == 0 {
		delete(nm.decided, name)
	} else {
		nm.decided[name] = decided{queue: slices.Clone(queue), from: from}
		if from != "" {
			nm.by[from]++
		}
	}
	d := &registry.Decision{Name: name, Queue: queue}
	if o := first(queue); o != "" && !strings.HasPrefix(o, fs.n.addrPrefix) {
		fs.mu.RLock()
		if _, fc := fs.lookup(o); fc != nil {
			d.Owner = fc.member
		}
		fs.mu.RUnlock()
	} else if o != "" {
		if c := fs.n.lookupAddress(o); c != nil {
			d.Owner = c.Member()
		}
	}
	fs.n.reg.Decide(d)
}

// believe records the owner this node last heard of, for its next claims
// (prefix: this node's addresses'), and, when an arbiter decided it
// (decision), which of its claimants that makes the owner.
func (nm *fedNames) believe(name, owner, prefix string, decision bool) {
	if m := nm.mine[name]; m != nil {
		m.BelievedOwner = owner
		if !decision {
			return
		}
		for _, c := range m.Claims {
			c.Owner = owner == prefix+strconv.FormatUint(c.GetId(), 10)
		}
	}
}

func first(q []string) string {
	if len(q) == 0 {
		return ""
	}
	return q[0]
}
