package switchboard

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// What another node may make this one do and keep: its messages are
// handed to Deliver straight, from a node "n2" that is up only as far as
// n1 knows (its link goes nowhere).

func fedEnc(m *pb.FedMessage) []byte { b, _ := gproto.Marshal(m); return b }

// loneFedNode starts n1 alone, with n2 (incarnation x1) up.
func loneFedNode(t *testing.T, opts ...NodeOption) (*Node, *fedState) {
	t.Helper()
	n1 := startFedNode(t, newFakeCluster(), "n1", opts...)
	fs := n1.fed
	fs.NodeUp("n2", "x1")
	waitFor(t, func() bool {
		fs.mu.RLock()
		defer fs.mu.RUnlock()
		return fs.peers["n2"] != nil && fs.peers["n2"].out
	})
	return n1, fs
}

// nameArbitratedBy returns a name whose arbiter, as fs sees the nodes up,
// is node.
func nameArbitratedBy(fs *fedState, node, prefix string, skip int) string {
	for i := 0; ; i++ {
		if name := fmt.Sprint(prefix, i); fs.arbiterOf(name) == node {
			if skip == 0 {
				return name
			}
			skip--
		}
	}
}

// fedConns announces n2's connections 1..count to fs.
func fedConns(fs *fedState, count int) {
	st := &pb.FedState{}
	for id := 1; id <= count; id++ {
		st.Conns = append(st.Conns, &pb.FedConn{Id: uint64(id)})
	}
	fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_State{State: st}}))
}

func claimsOf(name string, ids ...uint64) []byte {
	m := &pb.FedClaims{Name: name}
	for _, id := range ids {
		m.Claims = append(m.Claims, &pb.FedClaim{Id: id})
	}
	return fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Claims{Claims: m}})
}

func decisionOf(name string, queue ...string) []byte {
	return fedEnc(&pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: name, Queue: queue}}})
}

// TestFedNamesManyClaims: one message claiming a name for the most
// connections a node may have is decided in one pass, and the registry
// goes on serving this node's own claims (it waited on the arbiter's lock
// for a quadratic decision before).
func TestFedNamesManyClaims(t *testing.T) {
	n1, fs := loneFedNode(t)
	fedConns(fs, fedMaxConns)
	name := nameArbitratedBy(fs, "n1", "big", 0)
	ids := make([]uint64, fedMaxConns)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	c := dial(t, n1)
	msg := claimsOf(name, ids...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fs.Deliver("n2", msg)
	}()
	// The registry needs the arbiter's lock for this node's own claims:
	// a claim made meanwhile is answered in a bound a quadratic decision
	// (minutes under the race detector) cannot meet, with a wide margin
	// for a loaded machine (a linear one takes a fraction of a second).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if primary, _, err := c.Own(ctx, nameArbitratedBy(fs, "n1", "mine", 0)); err != nil || !primary {
		t.Fatalf("own during a large claim: %v %v", primary, err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("a claim for 65,536 connections took more than 15 s")
	}
	owns(t, name, ":n2.x1.1", n1)
	names, err := c.Names(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, ni := range names {
		if ni.Name == name && len(ni.Standby) != fedMaxConns-1 {
			t.Fatalf("%d standbys, want %d", len(ni.Standby), fedMaxConns-1)
		}
	}
}

// TestFedNamesArbiterOnly: claims on a name this node does not arbitrate,
// and a decision on a name from a node that is not its arbiter, are
// counted and ignored: neither leaves an owner here.
func TestFedNamesArbiterOnly(t *testing.T) {
	n1, fs := loneFedNode(t)
	fedConns(fs, 3)
	theirs := nameArbitratedBy(fs, "n2", "svc", 0)
	ours := nameArbitratedBy(fs, "n1", "svc", 0)
	marker := nameArbitratedBy(fs, "n2", "svc", 1)
	before := n1.FederationStats()
	fs.Deliver("n2", claimsOf(theirs, 1))
	fs.Deliver("n2", decisionOf(ours, ":n2.x1.2"))
	// A decision n2 may make, after the others: once it is applied, the
	// registry has seen the others.
	fs.Deliver("n2", decisionOf(marker, ":n2.x1.3"))
	owns(t, marker, ":n2.x1.3", n1)
	for _, name := range []string{theirs, ours} {
		if o := n1.reg.RemoteOwner(name); o != "" {
			t.Errorf("%s: owner %q", name, o)
		}
	}
	st := n1.FederationStats()
	if st.StaleClaims-before.StaleClaims != 1 || st.StaleDecisions-before.StaleDecisions != 1 {
		t.Fatalf("stale claims %d, stale decisions %d; want 1, 1", st.StaleClaims-before.StaleClaims, st.StaleDecisions-before.StaleDecisions)
	}
	fs.names.mu.Lock()
	defer fs.names.mu.Unlock()
	if fs.names.arb[theirs] != nil {
		t.Fatal("the claims on a name another node arbitrates are kept")
	}
}

// TestFedNamesPerNodeLimit: a node may claim, or decide, only so many
// names here; past that its claims and decisions on new names are
// refused and counted, and the ones it has go on changing.
func TestFedNamesPerNodeLimit(t *testing.T) {
	n1, fs := loneFedNode(t)
	fs.maxNames = 2
	fedConns(fs, 3)
	before := n1.FederationStats()
	for i := 0; i < 3; i++ {
		fs.Deliver("n2", claimsOf(nameArbitratedBy(fs, "n1", "claimed", i), 1))
		fs.Deliver("n2", decisionOf(nameArbitratedBy(fs, "n2", "decided", i), ":n2.x1.1"))
	}
	// Changes to names it has are taken.
	fs.Deliver("n2", claimsOf(nameArbitratedBy(fs, "n1", "claimed", 0), 2))
	fs.Deliver("n2", decisionOf(nameArbitratedBy(fs, "n2", "decided", 0), ":n2.x1.2"))
	owns(t, nameArbitratedBy(fs, "n1", "claimed", 0), ":n2.x1.2", n1)
	owns(t, nameArbitratedBy(fs, "n2", "decided", 0), ":n2.x1.2", n1)
	owns(t, nameArbitratedBy(fs, "n1", "claimed", 1), ":n2.x1.1", n1)
	owns(t, nameArbitratedBy(fs, "n2", "decided", 1), ":n2.x1.1", n1)
	for _, name := range []string{nameArbitratedBy(fs, "n1", "claimed", 2), nameArbitratedBy(fs, "n2", "decided", 2)} {
		if o := n1.reg.RemoteOwner(name); o != "" {
			t.Errorf("%s past the limit: owner %q", name, o)
		}
	}
	if d := n1.FederationStats().OverLimit - before.OverLimit; d != 2 {
		t.Fatalf("%d refused past the limit, want 2", d)
	}
}

// TestFedNamesOwnerNodeLost: a name whose owner and arbiter were both on
// a node that is lost, claimed nowhere else, is nobody's on the other
// nodes at once, and they announce it.
func TestFedNamesOwnerNodeLost(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	n3 := startFedNode(t, cl, "n3")
	waitMesh(t, n1, n2, n3)
	ctx := ctx5(t)
	name := nameArbitratedBy(n1.fed, "n2", "lost", 0)
	w := dial(t, n1)
	if err := w.Subscribe(ctx, GroupNames); err != nil {
		t.Fatal(err)
	}
	o := dial(t, n2)
	if primary, _, err := o.Own(ctx, name); err != nil || !primary {
		t.Fatalf("own: %v %v", primary, err)
	}
	owns(t, name, o.Address(), n1, n2, n3)
	cl.down("n2", "killed")
	owns(t, name, "", n1, n3)
	if names, err := w.Names(ctx); err != nil || len(names) != 0 {
		t.Fatalf("names after the owner's node was lost: %+v %v", names, err)
	}
	for {
		e := recv(t, w)
		if nt, err := e.Notice(); err == nil && nt.Kind == NoticeNameOwnerChanged && nt.Name == name && nt.NewOwner == "" {
			if nt.OldOwner != o.Address() {
				t.Fatalf("old owner %q, want %q", nt.OldOwner, o.Address())
			}
			break
		}
	}
}

// TestFedDeliverPanic: a panic on another node's message is counted as
// such (not as a malformed message), and the node goes on.
func TestFedDeliverPanic(t *testing.T) {
	n1, fs := loneFedNode(t)
	// A peer whose tables are missing: entering a connection panics.
	fs.mu.Lock()
	fs.setPeerLocked(&fedPeer{name: "n9", inc: "x9", prefix: ":n9.x9.", out: true})
	fs.mu.Unlock()
	before := n1.FederationStats()
	fs.Deliver("n9", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 1}}}))
	st := n1.FederationStats()
	if st.Panics-before.Panics != 1 || st.Malformed != before.Malformed {
		t.Fatalf("panics %d, malformed %d: want 1, 0", st.Panics-before.Panics, st.Malformed-before.Malformed)
	}
	fs.mu.Lock()
	fs.dropPeerLocked("n9")
	fs.mu.Unlock()
	c := dial(t, n1)
	if _, err := c.Call(context.Background(), SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
}

// TestFedRequestLabels: a remote request labelled as a group request
// reaches only a member of the group (the label cannot carry it past the
// policy's word on the member's address), and one to a name is asked of
// the receiver's policy on the name too.
func TestFedRequestLabels(t *testing.T) {
	var y, z *Conn
	var yAddr atomic.Pointer[string]
	n1, fs := loneFedNode(t, WithPolicy(PolicyFunc(func(who Cred, what Action, target string) error {
		if ya := yAddr.Load(); who.Node == "n2" && what == ActionSend && (target == "secret" || ya != nil && target == *ya) {
			return fmt.Errorf("n2 may not send to %s", target)
		}
		return nil
	})))
	fedConns(fs, 1)
	ctx := ctx5(t)
	seen := func() (*Conn, chan string) {
		ch := make(chan string, 8)
		c := dial(t, n1, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
			ch <- string(r.Payload)
			return nil, nil
		}))
		return c, ch
	}
	var ys, zs chan string
	y, ys = seen()
	z, zs = seen()
	ya := y.Address()
	yAddr.Store(&ya)
	if err := y.Subscribe(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	idOf := func(c *Conn) uint64 { _, _, id, _ := parseAddress(c.Address()); return id }
	req := func(rid uint64, to *Conn, dest, name, payload string) []byte {
		return fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: rid, From: 1, To: idOf(to),
			Dest: dest, Name: name, Payload: []byte(payload)}}})
	}
	before := n1.FederationStats()
	fs.Deliver("n2", req(1, y, "public", "", "label")) // y is not in public
	fs.Deliver("n2", req(2, y, "other", "", "legit"))
	fs.Deliver("n2", req(3, z, z.Address(), "secret", "by name"))
	fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: 1, To: idOf(z), Name: "secret", Payload: []byte("direct by name")}}}))
	fs.Deliver("n2", req(4, z, z.Address(), "", "legit"))
	fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: 1, To: idOf(z), Payload: []byte("legit direct")}}}))
	if e := recv(t, z); string(e.Payload) != "legit direct" {
		t.Fatalf("first message: %q, want the legit one", e.Payload)
	}
	for _, ch := range []chan string{ys, zs} {
		select {
		case got := <-ch:
			if got != "legit" {
				t.Fatalf("first delivered: %q, want legit", got)
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	st := n1.FederationStats()
	if st.NotMember-before.NotMember != 1 || st.Refused-before.Refused != 2 {
		t.Fatalf("not a member %d, refused %d: want 1, 2", st.NotMember-before.NotMember, st.Refused-before.Refused)
	}
}

// TestFedPerNodeLimits: what one node's connections may make this one
// keep is bounded per node, in all: memberships, distinct groups, and
// requests being served at once; past a limit the change or request is
// refused and counted, and room made is room again.
func TestFedPerNodeLimits(t *testing.T) {
	n1, fs := loneFedNode(t)
	fs.mu.Lock()
	fs.maxMemberships, fs.maxNodeGroups, fs.maxInFlight = 3, 2, 1
	fs.mu.Unlock()
	fedConns(fs, 2)
	ms := func(join bool, id uint64, g string) {
		m := &pb.FedMembership{Id: id, Group: g}
		if join {
			fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Join{Join: m}}))
		} else {
			fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Leave{Leave: m}}))
		}
	}
	before := n1.FederationStats()
	ms(true, 1, "g1")
	ms(true, 1, "g2")
	ms(true, 1, "g3") // a third group
	ms(true, 2, "g1")
	ms(true, 2, "g2") // a fourth membership
	count := func(g string) int { return len(fs.remoteMembers(g)) }
	if count("g1") != 2 || count("g2") != 1 || count("g3") != 0 {
		t.Fatalf("members g1 %d g2 %d g3 %d: want 2 1 0", count("g1"), count("g2"), count("g3"))
	}
	ms(false, 1, "g1")
	ms(true, 2, "g2")
	if count("g1") != 1 || count("g2") != 2 {
		t.Fatalf("after a leave: members g1 %d g2 %d: want 1 2", count("g1"), count("g2"))
	}
	// Requests in flight: one at a time.
	release := make(chan struct{})
	defer close(release)
	got := make(chan string, 4)
	y := dial(t, n1, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		got <- string(r.Payload)
		<-release
		return nil, nil
	}))
	_, _, yid, _ := parseAddress(y.Address())
	for rid, payload := range []string{"first", "second"} {
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: uint64(rid + 1), From: 1, To: yid,
			Dest: y.Address(), Payload: []byte(payload)}}}))
	}
	if p := <-got; p != "first" {
		t.Fatalf("served %q", p)
	}
	fs.mu.RLock()
	p := fs.peers["n2"]
	fs.mu.RUnlock()
	p.inMu.Lock()
	inFlight := len(p.in)
	p.inMu.Unlock()
	if d := n1.FederationStats().OverLimit - before.OverLimit; d != 3 || inFlight != 1 {
		t.Fatalf("%d refused past the limits, %d in flight: want 3, 1", d, inFlight)
	}
}

// TestFedWatcherOrder: a watcher of a group (and of sys.connections) hears
// of a remote member in that node's order: connected, subscribed, its
// publication, unsubscribed, disconnected, every time (the membership
// notices took a hop through the group's actor that the others did not).
func TestFedWatcherOrder(t *testing.T) {
	n1, fs := loneFedNode(t)
	ctx := ctx5(t)
	w := dial(t, n1)
	if _, err := w.SubscribeWithMembers(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	if err := w.Subscribe(ctx, GroupConnections); err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	for id := uint64(1); id <= rounds; id++ {
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: id, Groups: []string{"w"}}}}))
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Publish{Publish: &pb.FedPublish{From: id, Group: "w", Payload: []byte("m")}}}))
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnDown{ConnDown: &pb.FedConnDown{Id: id}}}))
	}
	want := []string{NoticeConnected.String(), NoticeSubscribed.String(), "message", NoticeUnsubscribed.String(), NoticeDisconnected.String()}
	for id := uint64(1); id <= rounds; id++ {
		addr := ":n2.x1." + fmt.Sprint(id)
		for _, step := range want {
			e := recv(t, w)
			got, from := "message", e.From
			if nt, err := e.Notice(); err == nil {
				got, from = nt.Kind.String(), nt.Member.Address
			}
			if got != step || from != addr {
				t.Fatalf("connection %d: %s from %s, want %s", id, got, from, step)
			}
		}
	}
}

// TestFedNodeUpReady: once NodeUp returns, the node's traffic may go: a
// connection it announces next is reachable at once (a client told of it
// by sys.connections found it undeliverable while the node's state had
// not gone out).
func TestFedNodeUpReady(t *testing.T) {
	n1, fs := loneFedNode(t)
	for i := 0; i < 20; i++ {
		inc := fmt.Sprint("y", i)
		fs.NodeUp("n2", inc)
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 1}}}))
		addr := ":n2." + inc + ".1"
		if n1.fedDest(addr) != addr {
			t.Fatalf("%s: not another node's", addr)
		}
		fs.mu.RLock()
		_, fc := fs.lookup(addr)
		fs.mu.RUnlock()
		if fc == nil {
			t.Fatalf("round %d: %s announced but not reachable", i, addr)
		}
	}
}

// panicPolicy panics when asked about the target "boom" (a bug of the
// node's, reached through another node's message).
type panicPolicy struct{}

func (panicPolicy) Allow(_ Cred, _ Action, target string) error {
	if target == "boom" {
		panic("the policy broke on boom")
	}
	return nil
}

// TestFedDeliverBatchPanic: a panic on a publication that a pass of the
// link hands over at once loses that publication, counted as a panic; the
// others of the pass are delivered, and the node goes on.
func TestFedDeliverBatchPanic(t *testing.T) {
	n1, fs := loneFedNode(t, WithPolicy(panicPolicy{}))
	ctx := ctx5(t)
	m := dial(t, n1)
	if err := m.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	fs.DeliverBatch("n2", [][]byte{fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 1, ClientName: "r"}}})})
	before := n1.FederationStats()
	fs.DeliverBatch("n2", [][]byte{
		appendFedPublish(nil, 1, "g", []byte("first")),
		appendFedPublish(nil, 1, "boom", []byte("lost")),
		appendFedPublish(nil, 1, "g", []byte("second")),
	})
	for _, want := range []string{"first", "second"} {
		e, err := m.RecvEvent(ctx)
		if err != nil || string(e.Payload) != want {
			t.Fatalf("event %q, %v: want %q", e.Payload, err, want)
		}
	}
	if st := n1.FederationStats(); st.Panics-before.Panics != 1 || st.Received-before.Received != 3 {
		t.Fatalf("panics %d, received %d: want 1, 3", st.Panics-before.Panics, st.Received-before.Received)
	}
}

// TestFedSenderOrder: the sending node's half of TestFedWatcherOrder. A
// client that connects, at once sends to a watcher on another node and
// publishes to its group, then closes: the watcher hears it connected
// before either message and disconnected after both, every time (the
// connection's announcement goes out on the link ahead of its first
// frame, its end after its last).
func TestFedSenderOrder(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	w := dial(t, n1)
	for _, g := range []string{GroupConnections, "g"} {
		if err := w.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	knows(t, n2, w.Address(), "g")
	for round := range 50 {
		c := dial(t, n2)
		if err := c.SendTo(ctx, w.Address(), []byte("direct")); err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(ctx, "g", []byte("group")); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		var seq []string
		for len(seq) < 4 {
			e := recv(t, w)
			if nt, err := e.Notice(); err == nil {
				if nt.Member.Address == c.Address() {
					seq = append(seq, nt.Kind.String())
				}
			} else if e.From == c.Address() {
				seq = append(seq, string(e.Payload))
			}
		}
		if want := []string{NoticeConnected.String(), "direct", "group", NoticeDisconnected.String()}; !slices.Equal(seq, want) {
			t.Fatalf("round %d: the watcher heard %v, want %v", round, seq, want)
		}
	}
}

// TestFedDeliverBatchRuns: a pass's publications are looked up once per
// run (same sender, same group), and a run ends where the sender or the
// group changes or another message comes: each publication reaches the
// group it names, from the connection that sent it, and one from a
// connection that went down earlier in the pass reaches nobody.
func TestFedDeliverBatchRuns(t *testing.T) {
	var asked atomic.Int64 // the policy is asked for every publication, run or not
	n1, fs := loneFedNode(t, WithPolicy(PolicyFunc(func(who Cred, what Action, _ string) error {
		if who.Node != "" && what == ActionPublish {
			asked.Add(1)
		}
		return nil
	})))
	ctx := ctx5(t)
	m := dial(t, n1)
	for _, g := range []string{"g", "h"} {
		if err := m.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for id := range uint64(2) {
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: id + 1, ClientName: "r"}}}))
	}
	before := n1.FederationStats()
	fs.DeliverBatch("n2", [][]byte{
		appendFedPublish(nil, 1, "g", []byte("a")),
		appendFedPublish(nil, 1, "g", []byte("b")),
		appendFedPublish(nil, 2, "g", []byte("c")),
		appendFedPublish(nil, 1, "h", []byte("d")),
		appendFedPublish(nil, 1, "g", []byte("e")),
		fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnDown{ConnDown: &pb.FedConnDown{Id: 1}}}),
		appendFedPublish(nil, 1, "g", []byte("lost")),
		appendFedPublish(nil, 2, "h", []byte("f")),
	})
	type got struct{ from, to, payload string }
	var seen []got
	for len(seen) < 6 {
		e, err := m.RecvEvent(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", seen, err)
		}
		if e.Kind == EventGroup {
			seen = append(seen, got{e.From, e.To, string(e.Payload)})
		}
	}
	a1, a2 := seen[0].from, seen[2].from
	want := []got{{a1, "g", "a"}, {a1, "g", "b"}, {a2, "g", "c"}, {a1, "h", "d"}, {a1, "g", "e"}, {a2, "h", "f"}}
	if a1 == a2 || !slices.Equal(seen, want) {
		t.Fatalf("the member received %v, want %v (two senders)", seen, want)
	}
	noEvent(t, m)
	if n := asked.Load(); n != 6 {
		t.Fatalf("the policy was asked %d times for 6 publications delivered", n)
	}
	if st := n1.FederationStats(); st.Malformed-before.Malformed != 1 || st.Received-before.Received != 8 {
		t.Fatalf("malformed %d, received %d: want 1 (the publication from a connection gone), 8",
			st.Malformed-before.Malformed, st.Received-before.Received)
	}
}
