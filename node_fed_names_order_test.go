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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own: %v %v", primary, err)
	}
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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own: %v %v", primary, err)
	}
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
		if primary, pos, err := c.Own(ctx, name); err != nil || primary != (i == 0) || pos != i {
			t.Fatalf("own %d: %v %d %v", i, primary, pos, err)
		}
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
