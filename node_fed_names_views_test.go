package switchboard

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// releaseFirst lets the first held message to node go, holding the rest.
func (h *holdFed) releaseFirst(node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.hold[node]
	if len(q) == 0 {
		return false
	}
	h.fakeFed.Send(node, q[0])
	h.hold[node] = q[1:]
	return true
}

func (h *holdFed) held(node string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.hold[node])
}

var _ = context.Background

// slowUpFed is a fake federation whose host takes NodeUp from the nodes in
// gate only once the gate's channel is closed.
type slowUpFed struct {
	*fakeFed
	gate map[string]chan struct{}
}

type slowUpHost struct {
	FederationHost
	gate map[string]chan struct{}
}

func (f *slowUpFed) Start(self, inc string, host FederationHost) error {
	return f.fakeFed.Start(self, inc, &slowUpHost{FederationHost: host, gate: f.gate})
}

func (h *slowUpHost) NodeUp(node, inc string) {
	if g := h.gate[node]; g != nil {
		<-g
	}
	h.FederationHost.NodeUp(node, inc)
}

// TestFedNamesAskResentWhenNodeStated: N arbitrates among N and C, F
// among all. o1 on N owns; C, a watcher, holds [o1]. N's sends to C are
// late (held). o1 releases: N decides nobody's (held to C). F starts and
// links with C first, while its NodeUp(N) stalls with N in its peers, not
// out. c1 on C claims, its first claims believing in o1, live as C sees
// it: F waits for N, and its claims_ask to N cannot go yet, so N counts
// as not asked. F's NodeUp(N) completes: N's state decides again, which
// asks N now; N claims nothing: c1 owns, and its Own returns.
func TestFedNamesAskResentWhenNodeStated(t *testing.T) {
	name, o := roles("svc.r5ask", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[1], o[2]) == o[1]
	})
	f, n, c := o[0], o[1], o[2]
	cl := newFakeCluster()
	hn := &holdFed{fakeFed: cl.fed()}
	ns := map[string]*Node{}
	ns[n] = startNode(t, WithNodeName(n), WithFederation(hn))
	ns[c] = startFedNode(t, cl, c)
	waitMesh(t, ns[n], ns[c])
	ctx := ctx5(t)
	o1, c1 := dial(t, ns[n]), dial(t, ns[c])
	knows(t, ns[c], o1.Address())
	knows(t, ns[n], c1.Address())
	ownAt(t, ctx, o1, name, 0)
	owns(t, name, o1.Address(), ns[n], ns[c])
	hn.holdTo(c)
	if err := o1.Disown(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := fedDecided(ns[n], name); return !ok })
	gate := make(chan struct{})
	ff := &slowUpFed{fakeFed: cl.fed(), gate: map[string]chan struct{}{n: gate}}
	ns[f] = startNode(t, WithNodeName(f), WithFederation(ff))
	linkedTo(t, ns[c], f, n)
	linkedTo(t, ns[f], c)
	knows(t, ns[f], c1.Address())
	time.Sleep(50 * time.Millisecond)
	block := make(chan struct{})
	var unblock sync.Once
	defer unblock.Do(func() { close(block) })
	ns[f].reg.Do(func([]registry.Entry) { <-block }) // F's NodeUp(N) stalls with N not out
	close(gate)
	waitFor(t, func() bool { return ns[f].fed.peer(n) != nil })
	res := make(chan error, 1)
	go func() {
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, _, err := c1.Own(octx, name)
		res <- err
	}()
	waitFor(t, func() bool {
		nm := &ns[f].fed.names
		nm.mu.Lock()
		defer nm.mu.Unlock()
		a := nm.arb[name]
		return a != nil && a.claims[c] != nil
	})
	unblock.Do(func() { close(block) })
	waitMesh(t, ns[f], ns[n], ns[c])
	hn.release(c)
	if err := <-res; err != nil {
		nm := &ns[f].fed.names
		nm.mu.Lock()
		a := nm.arb[name]
		t.Errorf("every link up: c1's Own on %s: %v; arbiter %s: claims %v believed %v heard %v asked %v queue %v; sendFails %d",
			c, err, f, a.claims, a.believed, a.heard, a.asked, a.queue, ns[f].fed.sendFails.Load())
		nm.mu.Unlock()
	}
}

// TestFedNamesPendShareOfOnePeer: TestFedNamesUnknownOwnerAskedLater after
// one names_resync from A listed maxNames names Z arbitrates, each with an
// owner on a node that never comes ("ghost"): A fills its own share of
// Z's pend (resyncAnswers), which leaves when A leaves; the later,
// legitimate listing of (name, o1) by A is kept once the cut took A's
// entries away, and A ends up naming nobody, every link up.
func TestFedNamesPendShareOfOnePeer(t *testing.T) {
	name, o := roles("svc.r5pend", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0] && arbiterAmong(name, o[2], o[1]) == o[2]
	})
	z, a, b := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, z, a, b)
	fs := ns[z].fed
	var held []*pb.FedNameHeld
	for i := 0; len(held) < fs.maxNames; i++ {
		if nm := fmt.Sprint("g", i); fs.arbiterOf(nm) == z {
			held = append(held, &pb.FedNameHeld{Name: nm, Owner: ":ghost.x.1"})
		}
	}
	fs.Deliver(a, encode(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: held}}}))
	fs.names.mu.Lock()
	t.Logf("%s's pend after one resync from %s: %d of its entries", z, a, fs.names.pendBy[a])
	fs.names.mu.Unlock()
	releasedWhileArbiterAway(t, cl, ns, name, z, a, b)
	if got := ns[a].reg.RemoteOwner(name); got != "" {
		t.Errorf("every link up, %s (watcher) names %s the owner of %s; nobody's on %s (%q) and %s (%q); OverLimit at %s: %d",
			a, got, name, z, ownerOn(ns[z], name), b, ownerOn(ns[b], name), z, ns[z].FederationStats().OverLimit)
	}
}

// TestFedNamesArbiterUndoesOwnCut: X arbitrates among all; o1 on N owns,
// c1 on C is the standby: [o1 c1]. Only the link X–N is cut. X drops N's
// claims and waits (C believes in o1, live as C sees it); its queue stays
// [o1 c1], but X applies its own cut of N's addresses, [c1]. The link
// comes back: N's claims make X decide [o1 c1], equal to its queue, and X
// applies it again (and tells every node) since what it applied differs:
// every link up, every node names o1.
func TestFedNamesArbiterUndoesOwnCut(t *testing.T) {
	name, o := roles("svc.r5cut", []string{"n1", "n2", "n3"}, func(name string, o []string) bool {
		return arbiterAmong(name, o[0], o[1:]...) == o[0]
	})
	x, n, c := o[0], o[1], o[2]
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, x, n, c)
	ctx := ctx5(t)
	o1, c1 := dial(t, ns[n]), dial(t, ns[c])
	for _, m := range []string{x, c} {
		knows(t, ns[m], o1.Address())
	}
	for _, m := range []string{x, n} {
		knows(t, ns[m], c1.Address())
	}
	ownAt(t, ctx, o1, name, 0)
	ownAt(t, ctx, c1, name, 1)
	owns(t, name, o1.Address(), ns[x], ns[n], ns[c])
	cl.cutPair(x, n)
	linkedTo(t, ns[x], c)
	time.Sleep(100 * time.Millisecond)
	t.Logf("cut: %s names %q, %s %q, %s %q", x, ownerOn(ns[x], name), n, ownerOn(ns[n], name), c, ownerOn(ns[c], name))
	cl.joinPair(x, n)
	waitMesh(t, ns[x], ns[n], ns[c])
	time.Sleep(300 * time.Millisecond)
	for _, m := range []string{x, n, c} {
		if got := ownerOn(ns[m], name); got != o1.Address() {
			qx, _ := fedDecided(ns[x], name)
			nm := &ns[x].fed.names
			nm.mu.Lock()
			aq := nm.arb[name].queue
			nm.mu.Unlock()
			t.Errorf("every link up: %s names %q; want %s (%s: %q, %s: %q); %s applied %v, its arbiter queue %v",
				m, got, o1.Address(), n, ownerOn(ns[n], name), c, ownerOn(ns[c], name), x, qx, aq)
		}
	}
}

// TestFedNamesPendAsksBounded: one names_resync from n2 listing
// maxNames names n1 arbitrates, each with an owner on n3, not up yet:
// the resync itself sends nothing (pend); when n3 comes, n1 asks it about
// at most resyncAnswers of the names, and each answer (none) makes one
// decision (nobody's) to each other node: what one resync costs is
// bounded by resyncAnswers × (1 + the other nodes), and n3's joining.
func TestFedNamesPendAsksBounded(t *testing.T) {
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, "n1", "n2")
	fs := ns["n1"].fed
	var held []*pb.FedNameHeld
	for i := 0; len(held) < fs.maxNames; i++ {
		if nm := fmt.Sprint("h", i); arbiterAmong(nm, "n1", "n2", "n3") == "n1" {
			held = append(held, &pb.FedNameHeld{Name: nm, Owner: ":n3.later.1"})
		}
	}
	before := fs.sent.Load()
	fs.Deliver("n2", encode(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: held}}}))
	atResync := fs.sent.Load() - before
	ns["n3"] = startFedNode(t, cl, "n3")
	waitMesh(t, ns["n1"], ns["n2"], ns["n3"])
	time.Sleep(time.Second)
	later := fs.sent.Load() - before - atResync
	t.Logf("one resync: %d sends at once, %d once n3 came", atResync, later)
	if bound := resyncAnswers*(1+2) + 64; atResync+later > uint64(bound) {
		t.Errorf("one names_resync of %d names made n1 send %d messages in all; want at most %d", len(held), atResync+later, bound)
	}
}

// TestFedNamesPendTwoAskers: A and B each list (name, an owner on a node
// Z does not know yet) in a names_resync to Z, its arbiter. Z keeps the
// name for both, each charged for it. Only the link Z–A is cut: A's share
// goes, and the name stays for B, whose view did not change (it does not
// list the name again).
func TestFedNamesPendTwoAskers(t *testing.T) {
	cl := newFakeCluster()
	ns := startFedNodes(t, cl, "n1", "n2", "n3")
	z, a, b := "n1", "n2", "n3"
	fs := ns[z].fed
	name := ""
	for i := 0; name == ""; i++ {
		if nm := fmt.Sprint("p", i); fs.arbiterOf(nm) == z {
			name = nm
		}
	}
	resync := encode(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: []*pb.FedNameHeld{{Name: name, Owner: ":ghost.x.1"}}}}})
	fs.Deliver(a, resync)
	fs.Deliver(b, resync)
	fs.names.mu.Lock()
	before := fmt.Sprint(fs.names.pend, fs.names.pendBy)
	fs.names.mu.Unlock()
	t.Logf("before the cut: %s", before)
	cl.cutPair(z, a)
	waitFor(t, func() bool { return fs.peer(a) == nil })
	fs.names.mu.Lock()
	defer fs.names.mu.Unlock()
	if got := fs.names.pend["ghost"][name]; len(got) != 1 || got[0] != b || fs.names.pendBy[b] != 1 || fs.names.pendBy[a] != 0 {
		t.Errorf("%s left %s only; %s listed (%s, ghost) too, want it kept for %s alone, charged once (pend %v, pendBy %v)",
			a, z, b, name, b, fs.names.pend, fs.names.pendBy)
	}
}
