package switchboard

import (
	"slices"
	"strings"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Names across the cluster, when views of the nodes up change: the
// resync a changed view asks for, the claims an arbiter that waits asks
// for, and a node's state coming in (node_fed_names.go has the rest; its
// lock order holds here).

// namesStated: a node's state came in: the names this node arbitrates are
// decided again (one may have waited for that node, or believed in an
// owner its state says is gone).
func (fs *fedState) namesStated(node string) {
	nm := &fs.names
	nm.mu.Lock()
	for name, a := range nm.arb {
		if fs.arbiterOf(name) == fs.self {
			fs.arbDecide(name, a)
		}
	}
	// The names a resync listed with an owner on node, known now: node
	// is asked for its claims on each this node still arbitrates and
	// holds nothing of; its answer (none, if the owner is gone) decides,
	// and the decision goes to every node.
	var ask []string
	for name, askers := range nm.pend[node] {
		for _, asker := range askers {
			if nm.pendBy[asker]--; nm.pendBy[asker] <= 0 {
				delete(nm.pendBy, asker)
			}
		}
		if nm.arb[name] == nil && fs.arbiterOf(name) == fs.self {
			ask = append(ask, name)
		}
	}
	delete(nm.pend, node)
	nm.mu.Unlock()
	if p := fs.peer(node); p != nil {
		for _, name := range ask {
			fs.send(p, claimsAsk(name))
		}
	}
}

// askClaims asks node for its claims on a's name, once while a waits
// for them; names.mu held.
func (fs *fedState) askClaims(name string, a *arbName, node string) {
	if a.asked[node] {
		return
	}
	if p := fs.peer(node); p != nil {
		// Asked only if it went (a node not up yet takes nothing: its
		// state's coming decides again, and asks then).
		a.asked[node] = fs.send(p, claimsAsk(name))
	}
}

// claimsAsk is the message that asks for a node's claims on name.
func claimsAsk(name string) *pb.FedMessage {
	return &pb.FedMessage{Body: &pb.FedMessage_ClaimsAsk{ClaimsAsk: &pb.FedClaimsAsk{Name: name}}}
}

// claimsAskIn answers an arbiter that waits for this node's claims on a
// name (FedClaimsAsk): they go to it (none if this node claims nothing),
// whichever node this one sees as the name's arbiter; where this node's
// own claims go (sentTo), and whose decisions it takes, does not change.
func (fs *fedState) claimsAskIn(node string, m *pb.FedClaimsAsk) {
	name := m.GetName()
	if checkName(name) != nil {
		fs.bad(node, "a claims ask on a bad name")
		return
	}
	p := fs.peer(node)
	if p == nil {
		fs.bad(node, "a message from a node that is not up")
		return
	}
	nm := &fs.names
	nm.mu.Lock()
	defer nm.mu.Unlock()
	out := &pb.FedClaims{Name: name}
	if mine := nm.mine[name]; mine != nil {
		out.Claims, out.BelievedOwner = mine.Claims, mine.BelievedOwner
		out.BelievedLive = fs.believedLive(mine.BelievedOwner)
		if nm.sentTo[name] != node {
			// It holds them now: it hears their changes too (the
			// owner releasing the name, say), or it would decide on
			// claims that went stale.
			if nm.askedBy[name] == nil {
				nm.askedBy[name] = map[string]bool{}
			}
			nm.askedBy[name][node] = true
		}
	}
	fs.send(p, &pb.FedMessage{Body: &pb.FedMessage_Claims{Claims: out}}) // encoded at once: sharing Claims is safe
}

// namesResyncIn answers a node whose view of the nodes up changed
// (FedNamesResync): this node's claims on the names it arbitrates now, as
// this node sees the nodes up, and, as catch-ups, the decisions on the
// names this node arbitrates.
func (fs *fedState) namesResyncIn(node string, m *pb.FedNamesResync) {
	p := fs.peer(node)
	if p == nil {
		return
	}
	held := m.GetHeld()
	if len(held) > fs.maxNames {
		fs.overLimit(node, "a names resync listing too many names")
		held = held[:fs.maxNames]
	}
	var answers []*pb.FedMessage  // to the names listed, sent once names.mu is let go
	asks := map[string][]string{} // the owner's node → the names to ask it about
	nm := &fs.names
	nm.mu.Lock()
	for name, m := range nm.mine {
		if fs.arbiterOf(name) == node {
			fs.sendClaims(m)
		}
	}
	for name, a := range nm.arb {
		if len(a.queue) > 0 && fs.arbiterOf(name) == fs.self {
			// A catch-up: taken unless the node claims the name (its
			// claims bring the answer, and its owner, in a healed
			// partition's half, keeps the name until the merge decides);
			// a node that only watches may see its half's owner change
			// early: it holds the arbiter's word, not a stale one.
			fs.send(p, &pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: name, Queue: a.queue, CatchUp: true}}})
		}
	}
	seen := make(map[string]bool, len(held))
	asked, pended := 0, 0
	for _, h := range held {
		if len(answers)+asked+pended >= resyncAnswers {
			fs.overLimit(node, "a names resync asking for too many answers")
			break
		}
		// A name the node holds a decision on, which this node
		// arbitrates and holds nothing of (an entry, deciding or
		// waiting, answers for itself): nobody's if the owner that
		// decision names is gone for certain; else its node is asked
		// for its claims (they may have gone elsewhere while the views
		// differed; its word on its own claims is the one that
		// counts), whose arrival decides, and the decision goes to
		// every node: at once if its state came here, when it comes
		// otherwise (pend).
		name := h.GetName()
		if checkName(name) != nil || len(h.GetOwner()) > pb.MaxNameLen {
			fs.bad(node, "a names resync listing a bad name")
			break
		}
		if seen[name] || nm.arb[name] != nil || fs.arbiterOf(name) != fs.self {
			continue
		}
		seen[name] = true
		switch owner, verdict := fs.heldOwner(h.GetOwner()); verdict {
		case ownerGone:
			answers = append(answers, &pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: name, CatchUp: true}}})
		case ownerAsk:
			asks[owner] = append(asks[owner], name)
			asked++
		case ownerPend:
			if slices.Contains(nm.pend[owner][name], node) {
				continue
			}
			if nm.pendBy[node] >= resyncAnswers {
				fs.overLimit(node, "names resyncs naming owners of nodes not known yet")
				continue
			}
			if nm.pend[owner] == nil {
				nm.pend[owner] = map[string][]string{}
			}
			nm.pend[owner][name] = append(nm.pend[owner][name], node)
			nm.pendBy[node]++
			pended++
		}
	}
	nm.mu.Unlock()
	for _, m := range answers {
		fs.send(p, m)
	}
	for owner, names := range asks {
		if q := fs.peer(owner); q != nil {
			for _, name := range names {
				fs.send(q, claimsAsk(name))
			}
		}
	}
}

// resyncAnswers bounds what one names_resync makes this node send for
// the names it lists: a legitimate one lists the names whose decisions
// its sender missed while their views differed, a few; a hostile one
// could list 65,536.
const resyncAnswers = 1024

// What a resync's listed owner calls for (heldOwner).
const (
	ownerBogus = iota // an address that does not parse: nothing
	ownerGone         // gone for certain: nobody's
	ownerAsk          // its node is up and stated here: ask it
	ownerPend         // its node is not up here or its state has not come: ask it then
)

// heldOwner tells what addr, the owner of a decision another node holds,
// calls for, and its node: gone for certain (this node's own, which
// claims nothing here, or one of a node up here in another run), its
// node to ask for its claims (up and stated here: its own word on its
// claims counts, not this node's copy of its connections, which may lag),
// or to ask once it is known (not up here, which may be on its way up or
// cut from this node alone, or up with its state to come).
func (fs *fedState) heldOwner(addr string) (node string, verdict int) {
	n, inc, _, ok := parseAddress(addr)
	switch {
	case !ok:
		return "", ownerBogus
	case n == fs.self:
		return "", ownerGone
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	p := fs.peers[n]
	switch {
	case p == nil || !p.out || !p.stated:
		return n, ownerPend
	case p.inc != inc:
		return "", ownerGone
	}
	return n, ownerAsk
}

// namesMoved: the nodes up changed (left went, its addresses starting
// with leftPrefix; or came came). The arbiter drops a node's claims when
// it leaves, and the names it no longer arbitrates; every node cuts the
// lost node's addresses out of the queues it holds, so that a name whose
// owner and arbiter were both on that node is nobody's (or the next
// standby's) here at once, announced, until the new arbiter decides; and
// every node sends its claims again where the arbiter moved or the owner
// it believes in changed, and asks for claims and decisions again
// (FedNamesResync).
func (fs *fedState) namesMoved(left, leftPrefix, came string) {
	nm := &fs.names
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if left != "" {
		for name, by := range nm.askedBy {
			if delete(by, left); len(by) == 0 {
				delete(nm.askedBy, name)
			}
		}
		if nm.pendBy[left] > 0 {
			for owner, names := range nm.pend {
				for name, askers := range names {
					if askers = slices.DeleteFunc(askers, func(a string) bool { return a == left }); len(askers) == 0 {
						delete(names, name)
					} else {
						names[name] = askers
					}
				}
				if len(names) == 0 {
					delete(nm.pend, owner)
				}
			}
			delete(nm.pendBy, left)
		}
	}
	for name, a := range nm.arb {
		if left != "" {
			// Heard from since this arbiter took the name: no longer, for
			// a node that left (if it comes back, its claims come anew).
			delete(a.heard, left)
			delete(a.asked, left)
			if a.claims[left] != nil {
				fs.unclaim(a, left)
				delete(a.owners, left)
				fs.arbDecide(name, a)
			} else if fs.arbiterOf(name) == fs.self {
				// It may have waited for the claims of the node that
				// left, believed to hold the owner: it waits no more.
				fs.arbDecide(name, a)
			}
		}
		if fs.arbiterOf(name) != fs.self {
			for node := range a.claims {
				fs.unclaim(a, node)
			}
			delete(nm.arb, name)
		}
	}
	believed := map[string]bool{} // names whose believed owner this cut changed
	if leftPrefix != "" {
		for name, d := range nm.decided {
			q := slices.DeleteFunc(slices.Clone(d.queue), func(addr string) bool { return strings.HasPrefix(addr, leftPrefix) })
			if len(q) == len(d.queue) {
				continue
			}
			fs.applyDecision(name, q, "")
			if first(q) != first(d.queue) {
				believed[name] = true
			}
			nm.believe(name, first(q), fs.n.addrPrefix, false) // this node's cut, no arbiter's decision
		}
	}
	for name, m := range nm.mine {
		// Again where the arbiter moved, and where the owner it believes
		// in changed (an arbiter may wait for the node it believed in).
		if fs.arbiterOf(name) != nm.sentTo[name] || nm.sentTo[name] == left || believed[name] {
			fs.sendClaims(m)
		}
	}
	// This node's view changed: it asks for what it may have missed, the
	// claims on the names it arbitrates now and the decisions of the
	// arbiters it sees now (each node answers as it sees the nodes up, and
	// asks in turn when its own view changes): of a node that came, the
	// names it arbitrates; of every node, when one left.
	// Each asked node is told the names this node holds a decision on
	// (and claims nothing of) that it arbitrates as this node sees the
	// nodes up: one whose queue emptied while the views differed is
	// nobody's, and only the asked node can say so.
	held := map[string][]*pb.FedNameHeld{} // arbiter → names, with the owners decided
	for name, d := range nm.decided {
		if nm.mine[name] == nil {
			if arb := fs.arbiterOf(name); arb != fs.self && len(held[arb]) < fs.maxNames {
				held[arb] = append(held[arb], &pb.FedNameHeld{Name: name, Owner: first(d.queue)})
			}
		}
	}
	resync := func(p *fedPeer) {
		fs.sendLocked(p, encode(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: held[p.name]}}}))
	}
	fs.mu.RLock() // (after names.mu: the lock order)
	defer fs.mu.RUnlock()
	if p := fs.peers[came]; came != "" && p != nil {
		resync(p)
	} else if left != "" {
		for _, p := range fs.peers {
			if p.out {
				resync(p)
			}
		}
	}
}
