package switchboard

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// TestFedNamesLiveOwnerKeptThroughResync: Y arbitrates among all, Z among
// Z, A and B. The owner o1 is on B; A only watches. Y is cut from Z and A
// (B still sees Y, and sends its claims there). A's resync lists the name
// to Z, its arbiter now, which holds no entry for it: the owner it names
// lives as Z sees the nodes, so Z asks B for its claims rather than say
// "nobody's". A keeps o1, and a client on A that claims the name is a
// standby behind o1: one owner.
func TestFedNamesLiveOwnerKeptThroughResync(t *testing.T) {
	name, o := roles("svc.rev1.", []string{"n1", "n2", "n3", "n4"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2:]...) == o[1]
	})
	y, z, a, b := o[0], o[1], o[2], o[3]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, y, z, a, b)
	ctx := ctx5(t)
	o1 := dial(t, ns[b])
	for _, n := range []string{y, z, a} {
		knows(t, ns[n], o1.Address())
	}
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[y], ns[z], ns[a], ns[b])
	cl.cutPair(y, z)
	cl.cutPair(y, a)
	linkedTo(t, ns[a], z, b)
	linkedTo(t, ns[z], a, b)
	time.Sleep(200 * time.Millisecond)
	if got := ns[a].reg.RemoteOwner(name); got != o1.Address() {
		t.Errorf("%s (watcher, linked to %s and %s) names owner %q; want %s, alive on %s", a, z, b, got, o1.Address(), b)
	}
	later := dial(t, ns[a])
	knows(t, ns[z], later.Address())
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	primary, pos, err := later.Own(octx, name)
	if err != nil || primary || pos != 1 {
		t.Errorf("a new claimant on %s: primary %v position %d %v; want a standby behind %s (B's owner still owns it on %s and %s)",
			a, primary, pos, err, o1.Address(), b, y)
	}
	t.Logf("owner on %s: %q; on %s: %q", b, ownerOn(ns[b], name), a, ownerOn(ns[a], name))
}

func ownerOn(n *Node, name string) string {
	if o := n.reg.Owner(name); o != nil {
		return o.Address()
	}
	return n.reg.RemoteOwner(name)
}

// TestFedNamesNewArbiterKeepsLiveOwner: A and B are linked, o1 on B owns
// the name. Z joins, the name's arbiter among all; what B sends Z (its
// state, its claims) comes late (held). A's resync lists the name to Z,
// which holds nothing of it and knows nothing of B's connections yet: it
// says nothing, and A, a watcher, keeps the live owner until B's claims
// reach Z and Z decides.
func TestFedNamesNewArbiterKeepsLiveOwner(t *testing.T) {
	name, o := roles("svc.rev2.", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	z, a, b := o[0], o[1], o[2]
	cl := newFakeCluster()
	hb := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{}
	ns[a] = startFedNode(t, cl, a)
	ns[b] = startNode(t, WithNodeName(b), WithFederation(hb))
	waitMesh(t, ns[a], ns[b])
	ctx := ctx5(t)
	o1 := dial(t, ns[b])
	knows(t, ns[a], o1.Address())
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[a], ns[b])
	hb.holdTo(z) // what B sends Z (its state, its claims) comes late
	ns[z] = startFedNode(t, cl, z)
	linkedTo(t, ns[a], z, b)
	linkedTo(t, ns[z], a, b)
	time.Sleep(300 * time.Millisecond)
	if got := ns[a].reg.RemoteOwner(name); got != o1.Address() {
		t.Errorf("%s (watcher) names owner %q while %s's claims are on their way to %s; want %s (alive, linked)", a, got, b, z, o1.Address())
	}
	hb.release(z)
	owns(t, name, o1.Address(), ns[a], ns[b], ns[z])
}

// TestFedNamesCutStandbyKeepsName: L arbitrates among all and holds the
// owner; d1 on D is the next standby, e1 on E the one after; E arbitrates
// among D and E, and E < D. L is lost: every node cuts L's addresses, so
// d1 is announced the owner everywhere. Neither node holds d1 as owner in
// its claims (a node's own cut sets no flag), but both believe in it, and
// E, the new arbiter, places the claimant the nodes believe in first: d1
// keeps the name (the standby order), e1 stays a standby.
func TestFedNamesCutStandbyKeepsName(t *testing.T) {
	name, o := roles("svc.rev3.", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[2], o[1]) == o[2] && o[2] < o[1]
	})
	l, d, e := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, l, d, e)
	ctx := ctx5(t)
	l1, d1, e1 := dial(t, ns[l]), dial(t, ns[d]), dial(t, ns[e])
	for _, c := range []*Conn{l1, d1, e1} {
		for _, n := range ns {
			if c.Address()[:4] != n.addrPrefix[:4] {
				knows(t, n, c.Address())
			}
		}
	}
	for i, c := range []*Conn{l1, d1, e1} {
		ownAt(t, ctx, c, name, i)
	}
	owns(t, name, l1.Address(), ns[l], ns[d], ns[e])
	cl.down(l, "lost")
	time.Sleep(300 * time.Millisecond)
	for _, n := range []string{d, e} {
		if q, _ := fedDecided(ns[n], name); first(q) != d1.Address() {
			t.Errorf("%s: queue %v; want the next standby %s (on %s) as owner", n, q, d1.Address(), d)
		}
	}
	t.Logf("d1 heard %v; e1 heard %v", nameNotices(d1, name, 100*time.Millisecond), nameNotices(e1, name, 100*time.Millisecond))
}

// TestFedNamesResyncBounded: one names_resync from a peer listing maxNames
// names the receiver arbitrates and holds nothing of, each naming an
// owner of the sender's in another run (gone: each would be answered
// "nobody's"), makes the receiver send at most resyncAnswers messages,
// after it let fedNames.mu go.
func TestFedNamesResyncBounded(t *testing.T) {
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, "n1", "n2")
	fs := ns["n1"].fed
	var names []string
	for i := 0; len(names) < fs.maxNames; i++ {
		nm := fmt.Sprint("h", i)
		if fs.arbiterOf(nm) == "n1" {
			names = append(names, nm)
		}
	}
	var held []*pb.FedNameHeld
	for _, nm := range names {
		held = append(held, &pb.FedNameHeld{Name: nm, Owner: ":n2.gone.1"}) // n2 in another run: gone
	}
	msg := encode(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: held}}})
	before := fs.sent.Load()
	t0 := time.Now()
	fs.Deliver("n2", msg)
	took := time.Since(t0)
	sent := fs.sent.Load() - before
	t.Logf("one resync of %d bytes (%d names): %d messages sent back, %v handling", len(msg), len(names), sent, took)
	if sent > resyncAnswers {
		t.Errorf("one names_resync made %d sends, more than %d", sent, resyncAnswers)
	}
}

// TestFedNamesStandbyOrderOverStaleBelief: full mesh, no partition, no
// delay. X arbitrates; c on D owns, s on X and t on T queue behind it:
// [c s t]. T's claims (sent once, when t claimed) believe c. c releases:
// [s t]; c claims again: [s t c] (T sends no claims again, so X still
// holds T's belief in c). s releases: no claimant is flagged and none is
// waited for, and the queue X decided goes first: t owns, not c.
func TestFedNamesStandbyOrderOverStaleBelief(t *testing.T) {
	name, o := roles("svc.stale", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	x, d, tn := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, x, d, tn)
	ctx := ctx5(t)
	c, s, tc := dial(t, ns[d]), dial(t, ns[x]), dial(t, ns[tn])
	for _, cn := range []*Conn{c, s, tc} {
		for _, n := range ns {
			if cn.Address()[:4] != n.addrPrefix[:4] {
				knows(t, n, cn.Address())
			}
		}
	}
	for i, cn := range []*Conn{c, s, tc} {
		ownAt(t, ctx, cn, name, i)
	}
	waitFor(t, func() bool { q, _ := fedDecided(ns[tn], name); return len(q) == 3 })
	if err := c.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	owns(t, name, s.Address(), ns[x], ns[d], ns[tn])
	ownAt(t, ctx, c, name, 2)
	waitFor(t, func() bool { q, _ := fedDecided(ns[tn], name); return len(q) == 3 })
	time.Sleep(100 * time.Millisecond)
	nameNotices(tc, name, 50*time.Millisecond)
	nameNotices(c, name, 50*time.Millisecond)
	if err := s.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	q, _ := fedDecided(ns[x], name)
	if first(q) != tc.Address() {
		nm := &ns[x].fed.names
		nm.mu.Lock()
		a := nm.arb[name]
		bel := fmt.Sprint(a.believed)
		nm.mu.Unlock()
		t.Errorf("s released [s t c]: arbiter %s decided %v; want t %s first (the standby order); arbiter's beliefs %s; t heard %v, c heard %v",
			x, q, tc.Address(), bel, nameNotices(tc, name, 50*time.Millisecond), nameNotices(c, name, 50*time.Millisecond))
	}
}

// TestFedNamesUnknownOwnerAskedLater: Z arbitrates among all, B among A
// and B. Z is cut from A and B; o1 on B owns the name by B's decision,
// which A, a watcher, holds. Z links with A: A's resync lists (name, o1)
// to Z, which does not see B and keeps the listing (pend). o1 releases:
// B decides nobody's, which A ignores (its arbiter is Z). Z links with B:
// B's state comes, Z asks B for its claims (none) and decides nobody's,
// which reaches A: every link up, nobody owns the name anywhere.
func TestFedNamesUnknownOwnerAskedLater(t *testing.T) {
	name, o := roles("svc.unknown", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[2], o[1]) == o[2]
	})
	z, a, b := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, z, a, b)
	o1 := releasedWhileArbiterAway(t, cl, ns, name, z, a, b)
	if got := ns[a].reg.RemoteOwner(name); got != "" {
		q, _ := fedDecided(ns[a], name)
		t.Errorf("every link up, %s (watcher) names %s the owner of %s (queue %v); nobody's on %s (%q) and %s (%q); %s lives and claims nothing",
			a, got, name, q, z, ownerOn(ns[z], name), b, ownerOn(ns[b], name), o1.Address())
	}
}

// releasedWhileArbiterAway plays TestFedNamesUnknownOwnerAskedLater's
// scenario on z, a and b, linked (z the arbiter of name among all, b
// among a and b): z is cut from a and b; o1 on b owns name, which a
// holds; z links with a; o1 releases; z links with b. It returns o1.
func releasedWhileArbiterAway(t *testing.T, cl *fakeCluster, ns map[string]*Node, name, z, a, b string) *Conn {
	t.Helper()
	cl.cutPair(z, a)
	cl.cutPair(z, b)
	linkedTo(t, ns[a], b)
	linkedTo(t, ns[b], a)
	ctx := ctx5(t)
	o1 := dial(t, ns[b])
	knows(t, ns[a], o1.Address())
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[a], ns[b])
	cl.joinPair(z, a)
	linkedTo(t, ns[a], z, b)
	linkedTo(t, ns[z], a)
	time.Sleep(100 * time.Millisecond)
	if err := o1.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := fedDecided(ns[b], name); return !ok })
	cl.joinPair(z, b)
	waitMesh(t, ns[z], ns[a], ns[b])
	time.Sleep(300 * time.Millisecond)
	return o1
}

// TestFedNamesLaggingStateKeepsLiveOwner: TestFedNamesLiveOwnerKeptThroughResync
// with B's conn_up of o1 late on its way to Z (held; Z has B's state from
// before o1 connected). A's resync lists (name, o1) to Z, which finds B
// stated but o1 missing from what B told it so far: it asks B rather
// than say nobody's (B's word on its own claims counts). A keeps the live
// owner, and a client on A that claims the name is a standby behind o1.
func TestFedNamesLaggingStateKeepsLiveOwner(t *testing.T) {
	name, o := roles("svc.lag", []string{"n1", "n2", "n3", "n4"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2:]...) == o[1]
	})
	y, z, a, b := o[0], o[1], o[2], o[3]
	cl := newFakeCluster()
	hb := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{}
	ns[y] = startFedNode(t, cl, y)
	ns[z] = startFedNode(t, cl, z)
	ns[a] = startFedNode(t, cl, a)
	ns[b] = startNode(t, WithNodeName(b), WithFederation(hb))
	waitMesh(t, ns[y], ns[z], ns[a], ns[b])
	ctx := ctx5(t)
	hb.holdTo(z) // what B sends Z comes late (o1's conn_up among it)
	o1 := dial(t, ns[b])
	for _, n := range []string{y, a} {
		knows(t, ns[n], o1.Address())
	}
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[y], ns[a], ns[b])
	cl.cutPair(y, z)
	cl.cutPair(y, a)
	linkedTo(t, ns[a], z, b)
	linkedTo(t, ns[z], a, b)
	time.Sleep(200 * time.Millisecond)
	hb.release(z)
	knows(t, ns[z], o1.Address())
	time.Sleep(200 * time.Millisecond)
	if got := ns[a].reg.RemoteOwner(name); got != o1.Address() {
		t.Errorf("%s (watcher, linked to %s and %s) names owner %q; want %s, alive on %s and owner there (and on %s)", a, z, b, got, o1.Address(), b, y)
	}
	later := dial(t, ns[a])
	knows(t, ns[z], later.Address())
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	primary, pos, err := later.Own(octx, name)
	if err != nil || primary || pos != 1 {
		t.Errorf("a new claimant on %s: primary %v position %d %v; want a standby behind %s (owner on %s: %q, on %s: %q)",
			a, primary, pos, err, o1.Address(), b, ownerOn(ns[b], name), y, ownerOn(ns[y], name))
	}
}

// TestFedNamesResyncAsksBounded: TestFedNamesResyncBounded with each
// listed name's owner a live connection of the sender: each name would
// be a claims_ask to the sender's node; the bound counts the names asked
// about: one resync makes at most resyncAnswers sends.
func TestFedNamesResyncAsksBounded(t *testing.T) {
	cl := newFakeCluster()
	h2 := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{"n1": startFedNode(t, cl, "n1"), "n2": startNode(t, WithNodeName("n2"), WithFederation(h2))}
	waitMesh(t, ns["n1"], ns["n2"])
	live := dial(t, ns["n2"])
	knows(t, ns["n1"], live.Address())
	fs := ns["n1"].fed
	var held []*pb.FedNameHeld
	for i := 0; len(held) < fs.maxNames; i++ {
		if nm := fmt.Sprint("h", i); fs.arbiterOf(nm) == "n1" {
			held = append(held, &pb.FedNameHeld{Name: nm, Owner: live.Address()})
		}
	}
	msg := encode(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: held}}})
	h2.holdTo("n1") // n2's answers (none) would make n1 decide, and send, meanwhile
	defer h2.release("n1")
	before := fs.sent.Load()
	fs.Deliver("n2", msg)
	if sent := fs.sent.Load() - before; sent > resyncAnswers || sent == 0 {
		t.Errorf("one names_resync listing %d names owned by a live connection of its sender made %d sends (claims_ask); want 1 to %d", len(held), sent, resyncAnswers)
	}
}

// TestFedNamesStandbyOrderOverCutBelief: X arbitrates among all and sees
// every node throughout; o1 (owner) and o2 on O, p on P: [o1 o2 p]. Only
// the link P–O is cut: P cuts O's addresses, believes p (its own cut),
// and sends X its claims so; X's answer to P is late (held), so X still
// holds P's belief in p when o1 releases. The next standby o2 lives and
// X sees it: o2 owns, by the queue X decided, not p by P's belief.
func TestFedNamesStandbyOrderOverCutBelief(t *testing.T) {
	name, o := roles("svc.cutbelief", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	x, on, pn := o[0], o[1], o[2]
	cl := newFakeCluster()
	hx := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{}
	ns[x] = startNode(t, WithNodeName(x), WithFederation(hx))
	ns[on] = startFedNode(t, cl, on)
	ns[pn] = startFedNode(t, cl, pn)
	waitMesh(t, ns[x], ns[on], ns[pn])
	ctx := ctx5(t)
	o1, o2, p := dial(t, ns[on]), dial(t, ns[on]), dial(t, ns[pn])
	for _, c := range []*Conn{o1, o2} {
		for _, n := range []string{x, pn} {
			knows(t, ns[n], c.Address())
		}
	}
	for _, n := range []string{x, on} {
		knows(t, ns[n], p.Address())
	}
	for i, c := range []*Conn{o1, o2, p} {
		ownAt(t, ctx, c, name, i)
	}
	waitFor(t, func() bool { q, _ := fedDecided(ns[pn], name); return len(q) == 3 })
	hx.holdTo(pn) // X's answers to P come late
	cl.cutPair(on, pn)
	waitFor(t, func() bool {
		nm := &ns[x].fed.names
		nm.mu.Lock()
		defer nm.mu.Unlock()
		a := nm.arb[name]
		return a != nil && a.believed[pn] == p.Address()
	})
	if err := o1.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	q, _ := fedDecided(ns[x], name)
	hx.release(pn)
	if first(q) != o2.Address() {
		t.Errorf("o1 released [o1 o2 p], o2 alive and seen by arbiter %s: decided %v; want o2 %s first", x, q, o2.Address())
	}
	time.Sleep(200 * time.Millisecond)
	q, _ = fedDecided(ns[x], name)
	t.Logf("after the release: %s decided %v; p heard %v", x, q, nameNotices(p, name, 50*time.Millisecond))
}
