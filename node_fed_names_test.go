package switchboard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// owns waits until every node's registry gives name's owner as addr.
func owns(t *testing.T, name, addr string, ns ...*Node) {
	t.Helper()
	waitFor(t, func() bool {
		for _, n := range ns {
			if a := n.reg.RemoteOwner(name); a != addr {
				if o := n.reg.Owner(name); o == nil || o.Address() != addr {
					return false
				}
			}
		}
		return true
	})
}

// ownAt claims name for c and requires it placed at pos in the name's
// queue: the owner (pos 0) or a standby.
func ownAt(t *testing.T, ctx context.Context, c *Conn, name string, pos int) {
	t.Helper()
	if primary, got, err := c.Own(ctx, name); err != nil || primary != (pos == 0) || got != pos {
		t.Fatalf("%s owns %s: primary %v, position %d, %v; want position %d", c.Address(), name, primary, got, err, pos)
	}
}

// acquired waits for c's NAME_ACQUIRED notice of name.
func acquired(t *testing.T, c *Conn, name string) {
	t.Helper()
	for {
		e := recv(t, c)
		if nt, err := e.Notice(); err == nil && nt.Kind == NoticeNameAcquired && nt.Name == name {
			return
		}
	}
}

// TestFedNames: a name claimed on three nodes has one owner and one
// standby queue across them; a request by name from any node reaches the
// owner; the owner's end hands the name to the next standby, and so does
// the loss of the owner's node.
func TestFedNames(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	n3 := startFedNode(t, cl, "n3")
	waitMesh(t, n1, n2, n3)
	ctx := ctx5(t)
	serve := func(tag string) DialOption {
		return WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte(tag), nil })
	}
	o1 := dial(t, n1, serve("o1"))
	o2 := dial(t, n2, serve("o2"))
	o3 := dial(t, n3, serve("o3"))
	caller := dial(t, n3)
	for _, c := range []*Conn{o2, o3} {
		for _, n := range []*Node{n1, n2, n3} {
			if c.Address()[:4] != n.addrPrefix[:4] {
				knows(t, n, c.Address())
			}
		}
	}
	for _, n := range []*Node{n2, n3} {
		knows(t, n, o1.Address())
	}
	for i, c := range []*Conn{o1, o2, o3} {
		primary, pos, err := c.Own(ctx, "svc")
		if err != nil || primary != (i == 0) || pos != i {
			t.Fatalf("own %d: primary %v position %d %v", i, primary, pos, err)
		}
	}
	owns(t, "svc", o1.Address(), n1, n2, n3)
	if r, err := caller.Request(ctx, "svc", nil); err != nil || string(r) != "o1" {
		t.Fatalf("request by name: %q %v", r, err)
	}
	names, err := caller.Names(ctx)
	if err != nil || len(names) != 1 || names[0].Owner != o1.Address() || len(names[0].Standby) != 2 {
		t.Fatalf("names seen from n3: %+v %v", names, err)
	}
	// The owner leaves: the next standby, on n2, has it.
	o1.Close()
	acquired(t, o2, "svc")
	owns(t, "svc", o2.Address(), n2, n3)
	if r, err := caller.Request(ctx, "svc", nil); err != nil || string(r) != "o2" {
		t.Fatalf("request by name after the owner left: %q %v", r, err)
	}
	// The owner's node is lost: the last standby, on n3, has it.
	cl.down("n2", "cut off")
	acquired(t, o3, "svc")
	owns(t, "svc", o3.Address(), n1, n3)
	if r, err := caller.Request(ctx, "svc", nil); err != nil || string(r) != "o3" {
		t.Fatalf("request by name after the owner's node was lost: %q %v", r, err)
	}
}

// TestFedNamesPartition: in a partition each side keeps or elects an
// owner (available); when it heals, the owner with the smallest address
// keeps the name, the other hears it lost, and a request by name from
// either side reaches the one owner.
func TestFedNamesPartition(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	serve := func(tag string) DialOption {
		return WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte(tag), nil })
	}
	a := dial(t, n1, serve("a"))
	b := dial(t, n2, serve("b"))
	knows(t, n1, b.Address())
	knows(t, n2, a.Address())
	// A name n2 arbitrates, whose owner in n2's half (b) has the larger
	// address: the merge, not the arbiter's side, must decide.
	svc := ""
	for i := 0; svc == ""; i++ {
		if name := fmt.Sprint("svc", i); n1.fed.arbiterOf(name) == "n2" {
			svc = name
		}
	}
	if primary, _, err := a.Own(ctx, svc); err != nil || !primary {
		t.Fatalf("a: %v %v", primary, err)
	}
	owns(t, svc, a.Address(), n1, n2)
	if primary, pos, err := b.Own(ctx, svc); err != nil || primary || pos != 1 {
		t.Fatalf("b: %v %d %v", primary, pos, err)
	}
	f2 := cl.node("n2")
	cl.down("n2", "partition")
	acquired(t, b, svc) // n2 alone: b owns it there
	owns(t, svc, a.Address(), n1)
	owns(t, svc, b.Address(), n2)
	cl.heal(f2)
	waitMesh(t, n1, n2)
	winner, loser := a, b
	if b.Address() < a.Address() {
		winner, loser = b, a
	}
	owns(t, svc, winner.Address(), n1, n2)
	for {
		e := recv(t, loser)
		if nt, err := e.Notice(); err == nil && nt.Kind == NoticeNameLost && nt.Name == svc {
			break
		}
	}
	for _, c := range []*Conn{a, b} {
		r, err := c.Request(ctx, svc, nil)
		if c == winner {
			// Its own name: a request to itself.
			if err != nil && !errors.Is(err, ErrUndeliverable) {
				t.Fatalf("%s: %v", c.Address(), err)
			}
			continue
		}
		want := "a"
		if winner == b {
			want = "b"
		}
		if err != nil || string(r) != want {
			t.Fatalf("request by name from %s after the heal: %q %v", c.Address(), r, err)
		}
	}
}

// TestFedNamePolicy: a message or request to a name owned on another node
// travels to the owner's address, and the owner's node asks its policy
// for the name too, as for a local sender: a rule on the name there
// refuses a remote sender it does not admit, while the owner's address
// stays reachable.
func TestFedNamePolicy(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2", WithPolicy(PolicyFunc(func(who Cred, what Action, target string) error {
		if who.Node == "n1" && what == ActionSend && target == "svc.guarded" {
			return errors.New("n1 may not send to svc.guarded")
		}
		return nil
	})))
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	a := dial(t, n1)
	b := dial(t, n2, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte("b"), nil }))
	knows(t, n1, b.Address())
	knows(t, n2, a.Address())
	for _, name := range []string{"svc.guarded", "svc.open"} {
		if _, _, err := b.Own(ctx, name); err != nil {
			t.Fatal(err)
		}
		owns(t, name, b.Address(), n1, n2)
	}
	if err := a.SendTo(ctx, "svc.guarded", []byte("x"), WantAnswer()); !errors.Is(err, ErrRefused) {
		t.Fatalf("SendTo svc.guarded from n1: %v, want ErrRefused by n2's policy", err)
	}
	if _, err := a.Request(ctx, "svc.guarded", []byte("x")); !errors.Is(err, ErrRefused) {
		t.Fatalf("Request svc.guarded from n1: %v, want ErrRefused by n2's policy", err)
	}
	if err := a.SendTo(ctx, "svc.guarded", []byte("dropped")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Request(ctx, "svc.open", []byte("x")); err != nil || string(got) != "b" {
		t.Fatalf("Request svc.open from n1: %q, %v", got, err)
	}
	if err := a.SendTo(ctx, b.Address(), []byte("to the address"), WantAnswer()); err != nil {
		t.Fatalf("SendTo the owner's address: %v", err)
	}
	for {
		e := recv(t, b)
		if e.Kind != EventMessage {
			continue
		}
		if string(e.Payload) != "to the address" {
			t.Fatalf("b received %q sent to svc.guarded", e.Payload)
		}
		break
	}
	if st := n2.FederationStats(); st.Refused != 3 {
		t.Fatalf("n2 refused %d, want 3", st.Refused)
	}
}

// TestFedNamesNewNode: a node that comes up learns the owners of names
// claimed only elsewhere, whose decisions stand (nothing changes them
// when it comes): each name's arbiter catches it up. Names enough that
// some have their arbiter on each of the nodes up before.
func TestFedNamesNewNode(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	owner := dial(t, n2, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte("owner"), nil }))
	knows(t, n1, owner.Address())
	var names []string
	for i := range 12 {
		name := fmt.Sprint("svc.new", i)
		ownAt(t, ctx, owner, name, 0)
		names = append(names, name)
	}
	var byArbiter [2]int
	for _, name := range names {
		owns(t, name, owner.Address(), n1, n2)
		if n1.fed.arbiterOf(name) == "n1" {
			byArbiter[0]++
		} else {
			byArbiter[1]++
		}
	}
	if byArbiter[0] == 0 || byArbiter[1] == 0 {
		t.Fatalf("arbiters of the names: %v on n1 and n2; want some on each", byArbiter)
	}
	n3 := startFedNode(t, cl, "n3")
	waitMesh(t, n1, n2, n3)
	for _, name := range names {
		owns(t, name, owner.Address(), n3)
	}
	caller := dial(t, n3)
	if r, err := caller.Request(ctx, names[0], nil); err != nil || string(r) != "owner" {
		t.Fatalf("request by name from the new node: %q %v", r, err)
	}
}

// arbiterAmong is the arbiter of name as self sees the nodes up: self and
// the others.
func arbiterAmong(name, self string, others ...string) string {
	fs := &fedState{self: self, peers: map[string]*fedPeer{}}
	for _, n := range others {
		fs.peers[n] = &fedPeer{name: n, out: true}
	}
	return fs.arbiterOf(name)
}

// nameNotices collects the kinds of the notices on name c hears until
// quiet for d.
func nameNotices(c *Conn, name string, d time.Duration) []string {
	var out []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		e, err := c.RecvEvent(ctx)
		cancel()
		if err != nil {
			return out
		}
		if nt, err := e.Notice(); err == nil && nt.Name == name {
			out = append(out, nt.Kind.String())
		}
	}
}

// TestFedNamesHalvesKeepOwners: a partition splits four nodes in two
// halves of two, each with an owner of one name; the halves link again
// one pair at a time, first the overall arbiter with the node of the
// other half that claims nothing. The owner of that half must keep the
// name through the heal (its node ignores the arbiter's catch-up, and
// the merge keeps the smaller address, its own): never lost, and every
// node agrees on it in the end.
func TestFedNamesHalvesKeepOwners(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	// Roles: a is the arbiter of name among all, c among c and d; the
	// owner on c's side has the smaller address (c < b by name).
	name, o := roles("svc.half", nodes, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[2], o[3]) == o[2] && o[2] < o[1]
	})
	a, b, c, d := o[0], o[1], o[2], o[3]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, nodes...)
	ctx := ctx5(t)
	o1, o2 := dial(t, ns[b]), dial(t, ns[c])
	for _, n := range nodes {
		if n != b {
			knows(t, ns[n], o1.Address())
		}
		if n != c {
			knows(t, ns[n], o2.Address())
		}
	}
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[a], ns[b], ns[c], ns[d])
	if primary, _, err := o2.Own(ctx, name); err != nil || primary {
		t.Fatalf("own on %s: %v %v, want a standby", c, primary, err)
	}
	for _, x := range []string{a, b} {
		for _, y := range []string{c, d} {
			cl.cutPair(x, y)
		}
	}
	owns(t, name, o2.Address(), ns[c], ns[d]) // each half has its owner
	owns(t, name, o1.Address(), ns[a], ns[b])
	nameNotices(o2, name, 200*time.Millisecond) // its acquisition in the partition
	for _, p := range [][2]string{{a, d}, {a, c}, {b, c}, {b, d}} {
		cl.joinPair(p[0], p[1])
	}
	owns(t, name, o2.Address(), ns[a], ns[b], ns[c], ns[d])
	if heard := nameNotices(o2, name, 300*time.Millisecond); len(heard) != 0 {
		t.Errorf("the owner on %s heard %v through the heal; want nothing (it kept the name)", c, heard)
	}
}

// TestFedNamesWatcherCaughtUpAfterHeal: three nodes; the arbiter's node
// (with the owner) is cut off from both others, whose standby becomes the
// owner on their side. The arbiter links with the standby's node first
// (the merge gives the name back to the smaller address, the arbiter's
// owner), then with the node that only watches: that node, which holds its
// side's decision, takes the arbiter's catch-up and agrees with the others.
func TestFedNamesWatcherCaughtUpAfterHeal(t *testing.T) {
	a, c, x := "n1", "n2", "n3"
	var name string
	for i := 0; name == ""; i++ {
		if n := fmt.Sprint("svc.watcher", i); arbiterAmong(n, a, c, x) == a {
			name = n
		}
	}
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, a, c, x)
	ctx := ctx5(t)
	o1, o2 := dial(t, ns[a]), dial(t, ns[c])
	knows(t, ns[c], o1.Address())
	knows(t, ns[x], o1.Address())
	knows(t, ns[a], o2.Address())
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[a], ns[c], ns[x])
	if primary, _, err := o2.Own(ctx, name); err != nil || primary {
		t.Fatalf("own on %s: %v %v, want a standby", c, primary, err)
	}
	cl.cutPair(a, c)
	cl.cutPair(a, x)
	owns(t, name, o2.Address(), ns[c], ns[x])
	cl.joinPair(a, c)
	owns(t, name, o1.Address(), ns[a], ns[c])
	cl.joinPair(a, x)
	owns(t, name, o1.Address(), ns[a], ns[c], ns[x])
}

// TestFedNamesHealedClaimantNotFlapped: a node that once claimed and gave
// up a name is cut off, claims it alone, and heals; its owner wins the
// merge (the smaller address) and hears the name acquired once, never
// lost and acquired again (the arbiter forgot what it had heard from the
// node when the node left).
func TestFedNamesHealedClaimantNotFlapped(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	var name string
	for i := 0; name == ""; i++ {
		if n := fmt.Sprint("svc.healed", i); arbiterAmong(n, "n1", "n2") == "n2" {
			name = n
		}
	}
	o1 := dial(t, n2)
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), n1, n2)
	once := dial(t, n1)
	knows(t, n2, once.Address())
	if _, _, err := once.Own(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := once.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		ns, err := once.Names(ctx)
		return err == nil && len(ns) == 1 && len(ns[0].Standby) == 0
	})
	f1 := cl.node("n1")
	cl.down("n1", "partition")
	o2 := dial(t, n1)
	ownAt(t, ctx, o2, name, 0)
	cl.heal(f1)
	waitMesh(t, n1, n2)
	owns(t, name, o2.Address(), n1, n2)
	if heard, want := nameNotices(o2, name, 300*time.Millisecond), []string{NoticeNameAcquired.String()}; !slices.Equal(heard, want) {
		t.Errorf("the owner on n1 heard %v, want %v", heard, want)
	}
}

// TestFedNamesArbiterStopsWaiting: an arbiter that waits for the claims
// of the node believed to hold the owner decides once that node is gone,
// though that node had sent it no claims. Four nodes: a arbitrates the
// name among all, c among b, c and d; the owner is on b. d is cut off
// from a and b first (and so knows of no owner); c claims the name (a
// standby, by a's decision); c is cut from a: c arbitrates and waits for
// b's claims, which b, still seeing a, sends a; c is cut from b: c must
// decide, and d hears that c's claimant owns the name.
func TestFedNamesArbiterStopsWaiting(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	name, o := roles("svc.wait", nodes, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2:]...) == o[1]
	})
	a, c, b, d := o[0], o[1], o[2], o[3] // a arbitrates among all, c among b, c and d
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, nodes...)
	ctx := ctx5(t)
	o1, o2 := dial(t, ns[b]), dial(t, ns[c])
	for _, n := range nodes {
		if n != b {
			knows(t, ns[n], o1.Address())
		}
	}
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[a], ns[b], ns[c], ns[d])
	cl.cutPair(a, d)
	cl.cutPair(b, d)
	waitFor(t, func() bool { return ns[d].reg.RemoteOwner(name) == "" })
	knows(t, ns[a], o2.Address())
	ownAt(t, ctx, o2, name, 1)
	cl.cutPair(a, c)
	cl.cutPair(b, c)
	owns(t, name, o2.Address(), ns[c], ns[d])
}

// startFedNodes starts the named nodes in cl and waits until they are
// all linked.
func startFedNodes(t *testing.T, cl *fakeCluster, names ...string) map[string]*Node {
	t.Helper()
	ns := map[string]*Node{}
	var all []*Node
	for _, n := range names {
		ns[n] = startFedNode(t, cl, n)
		all = append(all, ns[n])
	}
	waitMesh(t, all...)
	return ns
}

// linkedTo waits until the nodes n has up are exactly want.
func linkedTo(t *testing.T, n *Node, want ...string) {
	t.Helper()
	slices.Sort(want)
	waitFor(t, func() bool {
		n.fed.mu.RLock()
		defer n.fed.mu.RUnlock()
		var got []string
		for name, p := range n.fed.peers {
			if p.out {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

// roles finds a name and an order of nodes for it such that ok holds
// (the arbiters of the name among subsets of them).
func roles(prefix string, nodes []string, ok func(name string, order []string) bool) (string, []string) {
	var perms [][]string
	var permute func(rest, acc []string)
	permute = func(rest, acc []string) {
		if len(rest) == 0 {
			perms = append(perms, slices.Clone(acc))
		}
		for i := range rest {
			permute(slices.Concat(rest[:i], rest[i+1:]), append(acc, rest[i]))
		}
	}
	permute(nodes, nil)
	for i := 0; ; i++ {
		name := fmt.Sprint(prefix, i)
		for _, p := range perms {
			if ok(name, p) {
				return name, p
			}
		}
	}
}

// TestFedNamesWatcherAfterArbiterLeft: a node that only watches a name
// follows the arbiter it sees; when that arbiter leaves its view alone
// (the others lost it before), the node asks for the decisions again
// (FedNamesResync) and agrees with the others on the owner.
func TestFedNamesWatcherAfterArbiterLeft(t *testing.T) {
	name, order := roles("svc.left", []string{"n1", "n2", "n3", "n4"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2:]...) == o[1]
	})
	m, a, b, x := order[0], order[1], order[2], order[3] // m arbitrates among all, a without m
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, order...)
	ctx := ctx5(t)
	o1 := dial(t, ns[b])
	for _, n := range []string{m, a, x} {
		knows(t, ns[n], o1.Address())
	}
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[m], ns[a], ns[b], ns[x])
	cl.cutPair(m, a)
	cl.cutPair(m, b) // m, which sees x alone, may tell x the name is nobody's
	linkedTo(t, ns[m], x)
	cl.cutPair(m, x)
	linkedTo(t, ns[x], a, b)
	owns(t, name, o1.Address(), ns[a], ns[b], ns[x])
}

// TestFedNamesClaimsResentToNewArbiter: claims a node sent to the node it
// took for the arbiter, dropped there as stale (that node still saw the
// former arbiter), reach it once its own view makes it the arbiter (it
// asks again): a later claimant queues behind the owner instead of taking
// the name.
func TestFedNamesClaimsResentToNewArbiter(t *testing.T) {
	name, order := roles("svc.resent", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2]) == o[1]
	})
	z, a, c := order[0], order[1], order[2] // z arbitrates among all, a among a and c
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, z, a, c)
	ctx := ctx5(t)
	owner := dial(t, ns[c])
	knows(t, ns[a], owner.Address())
	ownAt(t, ctx, owner, name, 0)
	owns(t, name, owner.Address(), ns[z], ns[a], ns[c])
	cl.cutPair(z, c) // c's claims go to a, which still sees z
	linkedTo(t, ns[c], a)
	cl.cutPair(z, a) // now a arbitrates; c's view does not change
	linkedTo(t, ns[a], c)
	owns(t, name, owner.Address(), ns[a], ns[c])
	later := dial(t, ns[a])
	knows(t, ns[c], later.Address())
	ownAt(t, ctx, later, name, 1)
}

// TestFedNamesArbiterWaitsForOwnersNode: an arbiter that links with the
// standby's node before the owner's waits for the owner's node's claims
// (the standby's node believes in the owner) instead of handing the name
// to the standby: the owner keeps it, and neither hears a thing.
func TestFedNamesArbiterWaitsForOwnersNode(t *testing.T) {
	name, order := roles("svc.waits", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	arb, b, c := order[0], order[1], order[2] // the owner on b, the standby on c
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, arb, b, c)
	cl.cutPair(arb, b)
	cl.cutPair(arb, c)
	linkedTo(t, ns[b], c)
	linkedTo(t, ns[c], b)
	ctx := ctx5(t)
	owner, standby := dial(t, ns[b]), dial(t, ns[c])
	knows(t, ns[c], owner.Address())
	knows(t, ns[b], standby.Address())
	ownAt(t, ctx, owner, name, 0)
	ownAt(t, ctx, standby, name, 1)
	nameNotices(owner, name, 100*time.Millisecond)
	cl.joinPair(arb, c)
	waitFor(t, func() bool { // the arbiter has the standby's claims
		nm := &ns[arb].fed.names
		nm.mu.Lock()
		defer nm.mu.Unlock()
		a := nm.arb[name]
		return a != nil && a.claims[c] != nil
	})
	cl.joinPair(arb, b)
	owns(t, name, owner.Address(), ns[arb], ns[b], ns[c])
	if heard := nameNotices(owner, name, 200*time.Millisecond); len(heard) != 0 {
		t.Errorf("the owner heard %v; want nothing (it kept the name)", heard)
	}
	if heard := nameNotices(standby, name, 100*time.Millisecond); len(heard) != 0 {
		t.Errorf("the standby heard %v; want nothing", heard)
	}
}

// TestFedNamesOwnerClosedWhileArbiterAway: a node joins as the arbiter of
// a name, linked at first only to the standby's node, whose claims name
// the owner on another node; the owner then closes (its node tells the
// arbiter it sees, not the newcomer); then every link comes up. The
// newcomer must not wait for ever for claims from the owner's node, which
// claims nothing now: a new claimant's Own returns, and every node names
// the standby.
func TestFedNamesOwnerClosedWhileArbiterAway(t *testing.T) {
	name, o := roles("svc.closed", []string{"n1", "n2", "n3", "n4"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2:]...) == o[1]
	})
	n, a, b, c := o[0], o[1], o[2], o[3] // n arbitrates among all, a among a, b and c
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, a, b, c)
	ctx := ctx5(t)
	owner, standby := dial(t, ns[c]), dial(t, ns[b])
	knows(t, ns[a], owner.Address())
	knows(t, ns[b], owner.Address())
	knows(t, ns[a], standby.Address())
	knows(t, ns[c], standby.Address())
	ownAt(t, ctx, owner, name, 0)
	ownAt(t, ctx, standby, name, 1)
	ns[n] = startFedNode(t, cl, n)
	waitMesh(t, ns[a], ns[b], ns[c], ns[n])
	cl.cutPair(n, a)
	cl.cutPair(n, c)
	linkedTo(t, ns[n], b)
	owner.Close()
	waitFor(t, func() bool { return ns[a].reg.RemoteOwner(name) != owner.Address() }) // a heard the owner close
	cl.joinPair(n, a)
	cl.joinPair(n, c)
	waitMesh(t, ns[a], ns[b], ns[c], ns[n])
	later := dial(t, ns[a])
	knows(t, ns[n], later.Address())
	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, _, err := later.Own(octx, name); err != nil {
		t.Fatalf("a new claimant's Own, every link up: %v", err)
	}
	owns(t, name, standby.Address(), ns[a], ns[b], ns[c], ns[n])
}

// TestFedNamesArbiterAsksOwnersNode: in a partial partition (a no longer
// sees z; c still sees both and sends its claims to z, its arbiter), a,
// arbiter as it sees the nodes, waits for the claims of the node it
// believes holds the owner, c, and asks c for them (FedClaimsAsk), which
// c sends whichever node it sees as the arbiter: a new claimant on a
// hears at once, as a standby behind the owner while the owner claims,
// and as the owner once the owner disowned (a never heard z's decision).
// Without the ask a waits until the views agree.
func TestFedNamesArbiterAsksOwnersNode(t *testing.T) {
	for _, disown := range []bool{false, true} {
		t.Run(fmt.Sprintf("disowned=%v", disown), func(t *testing.T) {
			name, order := roles("svc.asks", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
				return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2]) == o[1]
			})
			z, a, c := order[0], order[1], order[2] // z arbitrates among all, a among a and c
			cl := newFakeCluster()
			ns := startFedNodes(t, cl, z, a, c)
			ctx := ctx5(t)
			owner := dial(t, ns[c])
			knows(t, ns[a], owner.Address())
			ownAt(t, ctx, owner, name, 0)
			owns(t, name, owner.Address(), ns[z], ns[a], ns[c])
			cl.cutPair(z, a)
			linkedTo(t, ns[a], c)
			linkedTo(t, ns[c], a, z)
			if disown {
				if err := owner.Disown(ctx, name); err != nil {
					t.Fatal(err)
				}
				waitFor(t, func() bool { return ns[z].reg.RemoteOwner(name) == "" && ns[z].reg.Owner(name) == nil })
			}
			later := dial(t, ns[a])
			knows(t, ns[c], later.Address())
			octx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			primary, pos, err := later.Own(octx, name)
			switch {
			case err != nil:
				t.Fatalf("a new claimant on %s: %v; want an answer", a, err)
			case disown && !primary:
				t.Fatalf("a new claimant on %s, the owner disowned: a standby at %d; want the owner", a, pos)
			case !disown && (primary || pos != 1):
				t.Fatalf("a new claimant on %s: primary %v, position %d; want a standby behind %s", a, primary, pos, owner.Address())
			}
		})
	}
}

// holdFed is a fake federation whose sends to some nodes can be held
// (queued, in order) and let go later: one message's delay, without a
// change in anyone's view of the nodes up.
type holdFed struct {
	*fakeFed
	mu   sync.Mutex
	hold map[string][][]byte // node → held messages (present: holding)
}

func (h *holdFed) Send(node string, msg []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if q, ok := h.hold[node]; ok {
		h.hold[node] = append(q, msg)
		return nil
	}
	return h.fakeFed.Send(node, msg)
}

func (h *holdFed) holdTo(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold == nil {
		h.hold = map[string][][]byte{}
	}
	h.hold[node] = nil
}

func (h *holdFed) release(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.hold[node] {
		h.fakeFed.Send(node, m)
	}
	delete(h.hold, node)
}

func fedDecided(n *Node, name string) ([]string, bool) {
	nm := &n.fed.names
	nm.mu.Lock()
	defer nm.mu.Unlock()
	d, ok := nm.decided[name]
	return d.queue, ok
}

// TestFedNamesReleaseRacesNewClaim: full mesh, no partition. The owner on
// B releases the name and the arbiter X decides it is nobody's; before
// that decision reaches D (held), a client on D claims the name, its
// node's first claims believing in the released owner. X waits for B's
// claims, asks B for them (B has none), and places D's claimant: its Own
// returns. Closing the owner changes nothing after that.
func TestFedNamesReleaseRacesNewClaim(t *testing.T) {
	name, o := roles("svc.race", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	x, b, d := o[0], o[1], o[2]
	cl := newFakeCluster()
	hx := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{}
	ns[x] = startNode(t, WithNodeName(x), WithFederation(hx))
	ns[b] = startFedNode(t, cl, b)
	ns[d] = startFedNode(t, cl, d)
	waitMesh(t, ns[x], ns[b], ns[d])
	ctx := ctx5(t)
	owner, later := dial(t, ns[b]), dial(t, ns[d])
	knows(t, ns[x], owner.Address())
	knows(t, ns[x], later.Address())
	knows(t, ns[d], owner.Address())
	ownAt(t, ctx, owner, name, 0)
	owns(t, name, owner.Address(), ns[x], ns[b], ns[d])
	waitFor(t, func() bool { q, _ := fedDecided(ns[d], name); return len(q) == 1 })

	hx.holdTo(d) // X's next decision reaches D late
	if err := owner.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := fedDecided(ns[x], name); return !ok }) // X: nobody's
	res := make(chan error, 1)
	go func() {
		octx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, _, err := later.Own(octx, name)
		res <- err
	}()
	waitFor(t, func() bool { // X has D's claims
		nm := &ns[x].fed.names
		nm.mu.Lock()
		defer nm.mu.Unlock()
		a := nm.arb[name]
		return a != nil && a.claims[d] != nil
	})
	hx.release(d)
	if err := <-res; err != nil {
		nm := &ns[x].fed.names
		nm.mu.Lock()
		a := nm.arb[name]
		t.Errorf("Own on %s (the only claimant): %v; arbiter %s: believed %v heard %v queue %v", d, err, x, a.believed, a.heard, a.queue)
		nm.mu.Unlock()
	}
	// Closing the believed owner does not end the wait either.
	owner.Close()
	time.Sleep(200 * time.Millisecond)
	if _, ok := fedDecided(ns[x], name); !ok {
		t.Errorf("after the believed owner closed, %s still decided nothing", x)
	}
}

// TestFedNamesNobodysNameCaughtUp: Z arbitrates among all; the owner is on
// C. Z and A are cut (A still sees C, C sees both); the owner releases the
// name, and Z decides it is nobody's, which A does not hear. When Z and A
// link again, A's resync lists the names it holds a decision on that Z
// arbitrates, and Z answers that this one is nobody's: A names no owner,
// and a claimant there gets it.
func TestFedNamesNobodysNameCaughtUp(t *testing.T) {
	name, o := roles("svc.nobody", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	z, a, c := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, z, a, c)
	ctx := ctx5(t)
	owner := dial(t, ns[c])
	knows(t, ns[a], owner.Address())
	knows(t, ns[z], owner.Address())
	ownAt(t, ctx, owner, name, 0)
	owns(t, name, owner.Address(), ns[z], ns[a], ns[c])
	cl.cutPair(z, a)
	linkedTo(t, ns[a], c)
	linkedTo(t, ns[z], c)
	if err := owner.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ns[z].reg.RemoteOwner(name) == "" && ns[c].reg.Owner(name) == nil })
	cl.joinPair(z, a)
	waitMesh(t, ns[z], ns[a], ns[c])
	time.Sleep(300 * time.Millisecond)
	if got := ns[a].reg.RemoteOwner(name); got != "" {
		t.Errorf("%s, every link up, still names %s the owner of %s (nobody's on %s and %s)", a, got, name, z, c)
	}
	// And a claimant there gets the name (no wait for a released owner).
	later := dial(t, ns[a])
	knows(t, ns[z], later.Address())
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, _, err := later.Own(octx, name); err != nil {
		t.Errorf("Own on %s, every link up, the name nobody's: %v", a, err)
	}
}

// TestFedNamesStandbyPromotedAfterHeal: as TestFedNamesNobodysNameCaughtUp,
// with a standby on A, whose claims believe in the released owner. After
// the heal Z waits for C's claims and asks C for them (none): the standby,
// the only claimant, owns the name everywhere, and a new claimant's Own
// returns.
func TestFedNamesStandbyPromotedAfterHeal(t *testing.T) {
	name, o := roles("svc.standby", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	z, a, c := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, z, a, c)
	ctx := ctx5(t)
	owner, standby := dial(t, ns[c]), dial(t, ns[a])
	for _, n := range []string{z, a} {
		knows(t, ns[n], owner.Address())
	}
	for _, n := range []string{z, c} {
		knows(t, ns[n], standby.Address())
	}
	ownAt(t, ctx, owner, name, 0)
	ownAt(t, ctx, standby, name, 1)
	cl.cutPair(z, a)
	linkedTo(t, ns[a], c)
	linkedTo(t, ns[z], c)
	if err := owner.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ns[z].reg.RemoteOwner(name) == "" && ns[c].reg.Owner(name) == nil })
	cl.joinPair(z, a)
	waitMesh(t, ns[z], ns[a], ns[c])
	time.Sleep(300 * time.Millisecond)
	for _, n := range []string{z, a, c} {
		if got, own := ns[n].reg.RemoteOwner(name), ns[n].reg.Owner(name); got != standby.Address() && (own == nil || own.Address() != standby.Address()) {
			t.Errorf("%s: owner of %s %q / %v, want the only claimant %s", n, name, got, own, standby.Address())
		}
	}
	later := dial(t, ns[z])
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, _, err := later.Own(octx, name); err != nil {
		t.Errorf("Own on %s, every link up: %v", z, err)
	}
}

// TestFedNamesReleaseThenOwnElsewhere: the race of
// TestFedNamesReleaseRacesNewClaim with no message held: the owner on B
// releases, and at once a client on D claims; its Own returns.
func TestFedNamesReleaseThenOwnElsewhere(t *testing.T) {
	name, o := roles("svc.race", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	x, b, d := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, x, b, d)
	ctx := ctx5(t)
	owner, later := dial(t, ns[b]), dial(t, ns[d])
	knows(t, ns[x], owner.Address())
	knows(t, ns[x], later.Address())
	knows(t, ns[d], owner.Address())
	ownAt(t, ctx, owner, name, 0)
	owns(t, name, owner.Address(), ns[x], ns[b], ns[d])
	waitFor(t, func() bool { q, _ := fedDecided(ns[d], name); return len(q) == 1 })
	done := make(chan error, 1)
	go func() { done <- owner.Disown(ctx, name) }()
	octx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, _, err := later.Own(octx, name); err != nil {
		t.Errorf("Own on %s right after the owner on %s released: %v", d, b, err)
	}
	<-done
}

// TestFedNamesReclaimAfterRelease: the owner c on D releases the name; the
// arbiter X hands it to the standby s on S; c claims it again before D
// hears X's decision (held). c is not held as owner in D's new claims (a
// claimant is, only while it claims since a decision made it owner) and
// D's registry does not answer the new claim from the queue it still
// holds: c is a standby behind s, which keeps the name.
func TestFedNamesReclaimAfterRelease(t *testing.T) {
	name, o := roles("svc.reclaim", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && o[1] < o[2]
	})
	x, d, s := o[0], o[1], o[2]
	cl := newFakeCluster()
	hx := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{}
	ns[x] = startNode(t, WithNodeName(x), WithFederation(hx))
	ns[d] = startFedNode(t, cl, d)
	ns[s] = startFedNode(t, cl, s)
	waitMesh(t, ns[x], ns[d], ns[s])
	ctx := ctx5(t)
	c, sb := dial(t, ns[d]), dial(t, ns[s])
	for _, n := range []string{x, s} {
		knows(t, ns[n], c.Address())
	}
	for _, n := range []string{x, d} {
		knows(t, ns[n], sb.Address())
	}
	ownAt(t, ctx, c, name, 0)
	owns(t, name, c.Address(), ns[x], ns[d], ns[s])
	ownAt(t, ctx, sb, name, 1)
	waitFor(t, func() bool { q, _ := fedDecided(ns[d], name); return len(q) == 2 })
	hx.holdTo(d) // X's decisions reach D late
	if err := c.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { q, _ := fedDecided(ns[x], name); return len(q) == 1 && q[0] == sb.Address() })
	res := make(chan string, 1)
	go func() {
		primary, pos, err := c.Own(ctx, name)
		res <- fmt.Sprint(primary, pos, err)
	}()
	waitFor(t, func() bool { q, _ := fedDecided(ns[x], name); return len(q) == 2 })
	hx.release(d)
	got := <-res
	time.Sleep(100 * time.Millisecond)
	q, _ := fedDecided(ns[x], name)
	if got != "false 1 <nil>" || first(q) != sb.Address() {
		t.Errorf("c claimed again after s got the name: Own %s, queue %v; want c a standby behind s (%s)", got, q, sb.Address())
	}
	t.Logf("s heard %v", nameNotices(sb, name, 100*time.Millisecond))
}

// TestFedNamesReclaimRightAfterRelease: TestFedNamesReclaimAfterRelease
// with no message held.
func TestFedNamesReclaimRightAfterRelease(t *testing.T) {
	name, o := roles("svc.reclaim", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && o[1] < o[2]
	})
	x, d, s := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, x, d, s)
	ctx := ctx5(t)
	c, sb := dial(t, ns[d]), dial(t, ns[s])
	for _, n := range []string{x, s} {
		knows(t, ns[n], c.Address())
	}
	for _, n := range []string{x, d} {
		knows(t, ns[n], sb.Address())
	}
	ownAt(t, ctx, c, name, 0)
	ownAt(t, ctx, sb, name, 1)
	waitFor(t, func() bool { q, _ := fedDecided(ns[d], name); return len(q) == 2 })
	if err := c.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	primary, pos, err := c.Own(ctx, name)
	if err != nil || primary || pos != 1 {
		t.Errorf("c claimed again right after it released: primary %v position %d %v; want a standby behind s", primary, pos, err)
	}
}

// TestFedNamesPairCutKeepsOwner: X arbitrates among all and sees every
// node throughout; only the link between B (the owner's node) and D (the
// standby's) is cut. D cuts B's addresses out of the queue it holds, but
// does not hold its standby as owner in its claims for that (no arbiter
// decided it): the owner, alive and seen by the arbiter, keeps the name,
// before and after the link comes back.
func TestFedNamesPairCutKeepsOwner(t *testing.T) {
	name, o := roles("svc.paircut", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && o[1] < o[2]
	})
	x, d, b := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, x, d, b)
	ctx := ctx5(t)
	owner, sb := dial(t, ns[b]), dial(t, ns[d])
	for _, n := range []string{x, d} {
		knows(t, ns[n], owner.Address())
	}
	for _, n := range []string{x, b} {
		knows(t, ns[n], sb.Address())
	}
	ownAt(t, ctx, owner, name, 0)
	ownAt(t, ctx, sb, name, 1)
	owns(t, name, owner.Address(), ns[x], ns[d], ns[b])
	cl.cutPair(d, b)
	linkedTo(t, ns[d], x)
	time.Sleep(200 * time.Millisecond)
	if q, _ := fedDecided(ns[x], name); first(q) != owner.Address() {
		t.Errorf("cut between %s and %s only: arbiter %s decided %v; want the owner %s kept", d, b, x, q, owner.Address())
	}
	cl.joinPair(d, b)
	waitMesh(t, ns[x], ns[d], ns[b])
	time.Sleep(200 * time.Millisecond)
	if q, _ := fedDecided(ns[x], name); first(q) != owner.Address() {
		t.Errorf("after the link came back: %v; owner heard %v", q, nameNotices(owner, name, 100*time.Millisecond))
	}
}

// TestFedNamesOwnerReleasesWhileArbiterLeaves: Y, the arbiter among all, is
// lost, and X, D and B hear it at different times (cut pair by pair). X
// and D hear first: D sends X its standby's claims, believing in the owner
// o1 on B; X, the new arbiter, asks B for its claims and decides on them.
// o1 then releases the name before B hears Y lost: B's (empty) claims go
// to Y, and to X, which asked for them. B then loses Y. The standby, the
// only claimant, owns the name on X, B and D.
func TestFedNamesOwnerReleasesWhileArbiterLeaves(t *testing.T) {
	name, o := roles("svc.leaves", []string{"n1", "n2", "n3", "n4"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2:]...) == o[1]
	})
	y, x, b, d := o[0], o[1], o[2], o[3]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, y, x, b, d)
	ctx := ctx5(t)
	owner, sb := dial(t, ns[b]), dial(t, ns[d])
	for _, n := range []string{y, x, d} {
		knows(t, ns[n], owner.Address())
	}
	for _, n := range []string{y, x, b} {
		knows(t, ns[n], sb.Address())
	}
	ownAt(t, ctx, owner, name, 0)
	ownAt(t, ctx, sb, name, 1)
	owns(t, name, owner.Address(), ns[y], ns[x], ns[b], ns[d])
	cl.cutPair(y, x)
	cl.cutPair(y, d)
	linkedTo(t, ns[x], b, d)
	linkedTo(t, ns[d], x, b)
	if err := owner.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := fedDecided(ns[b], name); return !ok }) // Y's word: nobody's
	cl.cutPair(y, b)
	linkedTo(t, ns[b], x, d)
	time.Sleep(300 * time.Millisecond)
	for _, n := range []string{x, b, d} {
		if q, _ := fedDecided(ns[n], name); first(q) != sb.Address() {
			t.Errorf("%s: queue %v; want the standby %s, the only claimant, as owner", n, q, sb.Address())
		}
	}
}
