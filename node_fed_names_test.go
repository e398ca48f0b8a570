package switchboard

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
		if primary, _, err := owner.Own(ctx, name); err != nil || !primary {
			t.Fatalf("own %s: %v %v", name, primary, err)
		}
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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", b, primary, err)
	}
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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", a, primary, err)
	}
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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on n2: %v %v", primary, err)
	}
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
	if primary, _, err := o2.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on n1 cut off: %v %v", primary, err)
	}
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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", b, primary, err)
	}
	owns(t, name, o1.Address(), ns[a], ns[b], ns[c], ns[d])
	cl.cutPair(a, d)
	cl.cutPair(b, d)
	waitFor(t, func() bool { return ns[d].reg.RemoteOwner(name) == "" })
	knows(t, ns[a], o2.Address())
	if primary, pos, err := o2.Own(ctx, name); err != nil || primary || pos != 1 {
		t.Fatalf("own on %s: %v %d %v, want the standby", c, primary, pos, err)
	}
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
	if primary, _, err := o1.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", b, primary, err)
	}
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
	if primary, _, err := owner.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", c, primary, err)
	}
	owns(t, name, owner.Address(), ns[z], ns[a], ns[c])
	cl.cutPair(z, c) // c's claims go to a, which still sees z
	linkedTo(t, ns[c], a)
	cl.cutPair(z, a) // now a arbitrates; c's view does not change
	linkedTo(t, ns[a], c)
	owns(t, name, owner.Address(), ns[a], ns[c])
	later := dial(t, ns[a])
	knows(t, ns[c], later.Address())
	if primary, pos, err := later.Own(ctx, name); err != nil || primary || pos != 1 {
		t.Fatalf("a later claimant on %s: primary %v, position %d, %v; want a standby behind %s", a, primary, pos, err, owner.Address())
	}
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
	if primary, _, err := owner.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", b, primary, err)
	}
	if primary, pos, err := standby.Own(ctx, name); err != nil || primary || pos != 1 {
		t.Fatalf("own on %s: %v %d %v, want the standby", c, primary, pos, err)
	}
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
	if primary, _, err := owner.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own on %s: %v %v", c, primary, err)
	}
	if primary, pos, err := standby.Own(ctx, name); err != nil || primary || pos != 1 {
		t.Fatalf("own on %s: %v %d %v, want the standby", b, primary, pos, err)
	}
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
			if primary, _, err := owner.Own(ctx, name); err != nil || !primary {
				t.Fatalf("own on %s: %v %v", c, primary, err)
			}
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
