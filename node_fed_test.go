package switchboard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// waitMesh waits until every node has every other up, with its state sent.
func waitMesh(t *testing.T, ns ...*Node) {
	t.Helper()
	waitFor(t, func() bool {
		for _, n := range ns {
			n.fed.mu.RLock()
			up := 0
			for _, p := range n.fed.peers {
				if p.out {
					up++
				}
			}
			n.fed.mu.RUnlock()
			if up != len(ns)-1 {
				return false
			}
		}
		return true
	})
}

// knows waits until n knows the remote connection addr (and, with groups,
// its membership of them).
func knows(t *testing.T, n *Node, addr string, groups ...string) {
	t.Helper()
	waitFor(t, func() bool {
		n.fed.mu.RLock()
		defer n.fed.mu.RUnlock()
		_, fc := n.fed.lookup(addr)
		if fc == nil {
			return false
		}
		for _, g := range groups {
			if !fc.groups[g] {
				return false
			}
		}
		return true
	})
}

func seqPayload(tag byte, i int) []byte {
	return binary.LittleEndian.AppendUint32([]byte{tag}, uint32(i))
}

// TestFedCrossNodeTraffic: a sender on n1 mixes messages, publications
// and requests to a receiver on n2, and a request to a group with members
// on both nodes; every payload carries its number, and the receiver sees
// each stream complete and in order.
func TestFedCrossNodeTraffic(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	reqs := make(chan int, 1000)
	b := dial(t, n2, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if r.Payload[0] == 'r' {
			reqs <- int(binary.LittleEndian.Uint32(r.Payload[1:]))
		}
		return append([]byte("re:"), r.Payload...), nil
	}))
	local := dial(t, n1, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		return []byte("local"), nil
	}))
	if err := b.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if err := local.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	a := dial(t, n1)
	knows(t, n1, b.Address(), "g")
	knows(t, n2, a.Address())
	const rounds = 300
	done := make(chan error, 1)
	go func() {
		next := map[EventKind]int{}
		for range 2 * rounds {
			e, err := b.RecvEvent(ctx)
			if err != nil {
				done <- err
				return
			}
			if e.From != a.Address() {
				done <- fmt.Errorf("event from %q, want %q", e.From, a.Address())
				return
			}
			i := int(binary.LittleEndian.Uint32(e.Payload[1:]))
			if i != next[e.Kind] {
				done <- fmt.Errorf("kind %v: got %d, want %d", e.Kind, i, next[e.Kind])
				return
			}
			next[e.Kind]++
		}
		done <- nil
	}()
	for i := range rounds {
		if err := a.SendTo(ctx, b.Address(), seqPayload('d', i)); err != nil {
			t.Fatal(err)
		}
		if err := a.Publish(ctx, "g", seqPayload('g', i)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			r, err := a.Request(ctx, b.Address(), seqPayload('r', i))
			if err != nil || string(r) != "re:"+string(seqPayload('r', i)) {
				t.Fatalf("request %d: %q %v", i, r, err)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := 0
	for range len(reqs) {
		i := <-reqs
		if i != want {
			t.Fatalf("request %d served out of order (want %d)", i, want)
		}
		want += 10
	}
	if want != rounds {
		t.Fatalf("%d requests served, want %d", want/10, rounds/10)
	}
	// A group request reaches the member here and the one on n2.
	res, err := a.RequestGroup(ctx, "g", seqPayload('q', 7))
	if err != nil || len(res) != 2 {
		t.Fatalf("group request: %+v %v", res, err)
	}
	got := map[string]string{}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Address, r.Err)
		}
		got[r.Address] = string(r.Payload)
	}
	if got[local.Address()] != "local" || got[b.Address()] != "re:"+string(seqPayload('q', 7)) {
		t.Fatalf("group results %q", got)
	}
	// The group's members, as either node lists them.
	for _, c := range []*Conn{a, b} {
		ms, err := c.Members(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		for _, m := range ms {
			addrs = append(addrs, m.Address)
		}
		if !slices.Contains(addrs, b.Address()) || !slices.Contains(addrs, local.Address()) || len(addrs) != 2 {
			t.Fatalf("members seen from %s: %v", c.Address(), addrs)
		}
	}
	ms, err := a.SubscribeWithMembers(ctx, "g")
	if err != nil || len(ms) != 3 {
		t.Fatalf("subscribe with members: %+v %v", ms, err)
	}
	// The connections listing ends with the other node's, in its groups.
	cs, err := a.Connections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var remote []ConnInfo
	for _, ci := range cs {
		if ci.Transport == "remote" {
			remote = append(remote, ci)
		}
	}
	if len(remote) != 1 || remote[0].Address != b.Address() || remote[0].Cred.Node != "n2" || !slices.Equal(remote[0].Groups, []string{"g"}) {
		t.Fatalf("remote connections listed: %+v", remote)
	}
	if st := n2.FederationStats(); st.Malformed != 0 || st.Received == 0 {
		t.Fatalf("n2's federation stats %+v", st)
	}
}

// TestFedWantAnswer: a message that wants an answer gets the other node's
// word: delivered, or undeliverable for a connection it does not have; a
// publication wants a member somewhere in the cluster.
func TestFedWantAnswer(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	a := dial(t, n1)
	b := dial(t, n2)
	knows(t, n1, b.Address())
	mon := dial(t, n2) // the node's uid may monitor
	if err := mon.Monitor(ctx, b.Address()); err != nil {
		t.Fatal(err)
	}
	if err := a.SendTo(ctx, b.Address(), []byte("hi"), WantAnswer()); err != nil {
		t.Fatalf("want-answer to a remote connection: %v", err)
	}
	if e := recv(t, b); string(e.Payload) != "hi" || e.From != a.Address() {
		t.Fatalf("got %+v", e)
	}
	// n2's monitor of b sees the message from n1.
	if e := recv(t, mon); e.Kind != EventMonitor || e.From != a.Address() || e.To != b.Address() || string(e.Payload) != "hi" {
		t.Fatalf("monitor got %+v", e)
	}
	// An address on n2 nobody has, an address of a node that does not
	// exist, a request to either.
	ghost := n2.addrPrefix + "999999"
	for _, to := range []string{ghost, ":n9.abc.1"} {
		if err := a.SendTo(ctx, to, []byte("x"), WantAnswer()); !errors.Is(err, ErrUndeliverable) {
			t.Fatalf("want-answer to %s: %v", to, err)
		}
		if _, err := a.Request(ctx, to, []byte("x")); !errors.Is(err, ErrUndeliverable) {
			t.Fatalf("request to %s: %v", to, err)
		}
	}
	if err := a.Publish(ctx, "empty", []byte("x"), WantAnswer()); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("want-answer to a group empty everywhere: %v", err)
	}
	if _, err := a.RequestGroup(ctx, "empty", []byte("x")); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("group request to a group empty everywhere: %v", err)
	}
	if err := b.Subscribe(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	knows(t, n1, b.Address(), "far")
	if err := a.Publish(ctx, "far", []byte("y"), WantAnswer()); err != nil {
		t.Fatalf("want-answer to a group with a member on n2: %v", err)
	}
	if e := recv(t, b); string(e.Payload) != "y" || e.To != "far" {
		t.Fatalf("got %+v", e)
	}
}

// TestFedNodeDown: n2 is cut off while a request waits on it: the request
// fails with ErrPeerGone at once, n1's clients hear that n2's connections
// disconnected (node lost) and that n2 left; n2 comes back as a new
// incarnation, n1 hears it join, and its groups are known again.
func TestFedNodeDown(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	watch := dial(t, n1)
	for _, g := range []string{GroupConnections, GroupNodes} {
		if err := watch.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	started := make(chan struct{})
	b := dial(t, n2, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	if nt := notices(t, watch, 1)[0]; nt.Kind != NoticeConnected || nt.Member.Address != b.Address() || nt.Member.Cred.Node != "n2" {
		t.Fatalf("connected notice %+v", nt)
	}
	a := dial(t, n1)
	knows(t, n1, b.Address())
	errc := make(chan error, 1)
	go func() {
		_, err := a.Request(context.Background(), b.Address(), []byte("wait"))
		errc <- err
	}()
	<-started
	t0 := time.Now()
	cl.down("n2", "cut off")
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerGone) {
			t.Fatalf("request: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the request did not fail when its node went down")
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("the request failed %v after its node went down", d)
	}
	var kinds []NoticeKind
	for _, nt := range notices(t, watch, 3) { // a connected, then b disconnected and n2 left
		kinds = append(kinds, nt.Kind)
		switch nt.Kind {
		case NoticeDisconnected:
			if nt.Member.Address != b.Address() || nt.Reason != DisconnectNodeLost {
				t.Fatalf("disconnected notice %+v", nt)
			}
		case NoticeNodeLeft:
			if nt.Node != "n2" || nt.Detail != "cut off" {
				t.Fatalf("node left notice %+v", nt)
			}
		}
	}
	if !slices.Equal(kinds, []NoticeKind{NoticeConnected, NoticeDisconnected, NoticeNodeLeft}) {
		t.Fatalf("notices %v", kinds)
	}
	if err := a.SendTo(ctx, b.Address(), nil, WantAnswer()); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("want-answer to a connection of a node gone: %v", err)
	}

	// n2 again, a new incarnation: a new Node of the same name.
	n2b := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2b)
	if nt := notices(t, watch, 1)[0]; nt.Kind != NoticeNodeJoined || nt.Node != "n2" || n2b.addrPrefix != ":n2."+nt.Incarnation+"." {
		t.Fatalf("joined notice %+v (prefix %s)", nt, n2b.addrPrefix)
	}
	b2 := dial(t, n2b)
	if err := b2.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	knows(t, n1, b2.Address(), "g")
	if err := a.Publish(ctx, "g", []byte("again"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, b2); string(e.Payload) != "again" {
		t.Fatalf("got %+v", e)
	}
}

// TestFedPolicy: a remote connection's credentials name its node, and the
// policy of the node it sends to decides on them.
func TestFedPolicy(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	var seen []Cred
	n2 := startFedNode(t, cl, "n2", WithPolicy(PolicyFunc(func(who Cred, what Action, target string) error {
		if who.Node == "n1" && what == ActionSend {
			return errors.New("n1 may not send here")
		}
		return nil
	})))
	waitMesh(t, n1, n2)
	_ = seen
	ctx := ctx5(t)
	a := dial(t, n1)
	b := dial(t, n2, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return nil, nil }))
	knows(t, n1, b.Address())
	knows(t, n2, a.Address())
	if err := a.SendTo(ctx, b.Address(), []byte("x"), WantAnswer()); !errors.Is(err, ErrRefused) {
		t.Fatalf("send refused by n2's policy: %v", err)
	}
	if _, err := a.Request(ctx, b.Address(), []byte("x")); !errors.Is(err, ErrRefused) {
		t.Fatalf("request refused by n2's policy: %v", err)
	}
	if st := n2.FederationStats(); st.Refused != 2 {
		t.Fatalf("refused %d, want 2", st.Refused)
	}
	// The other way is n1's policy: none.
	if err := b.SendTo(ctx, a.Address(), []byte("x"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, a); e.From != b.Address() {
		t.Fatalf("got %+v", e)
	}
	// The default policy never takes a remote uid for a local one.
	if err := n1.decide(Cred{UID: 0, Node: "n2"}, ActionMonitor, ""); err == nil {
		t.Fatal("a remote root may monitor under the default policy")
	}
}

// TestFedMalformed: what another node sends that makes no sense is
// counted and dropped, and the node goes on serving.
func TestFedMalformed(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	a := dial(t, n1)
	b := dial(t, n2)
	knows(t, n1, b.Address())
	enc := func(m *pb.FedMessage) []byte { b, _ := gproto.Marshal(m); return b }
	bad := [][]byte{
		{0xff, 0xff, 0xff},
		enc(&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: 424242, To: 1, Payload: []byte("x")}}}),
		enc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 0}}}),
		enc(&pb.FedMessage{Body: &pb.FedMessage_Join{Join: &pb.FedMembership{Id: 424242, Group: "g"}}}),
		enc(&pb.FedMessage{Body: &pb.FedMessage_Publish{Publish: &pb.FedPublish{From: 424242, Group: "sys.connections"}}}),
	}
	before := n1.FederationStats()
	cl.mu.Lock()
	f2 := cl.nodes["n2"]
	cl.mu.Unlock()
	for _, m := range bad {
		if err := f2.Send("n1", m); err != nil {
			t.Fatal(err)
		}
	}
	// A kind n1 does not know (field 99): ignored, counted apart.
	if err := f2.Send("n1", []byte{0x9a, 0x06, 0x00}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		st := n1.FederationStats()
		return st.Malformed-before.Malformed == uint64(len(bad)) && st.Unknown-before.Unknown == 1
	})
	if st := n1.FederationStats(); st.Panics != 0 {
		t.Fatalf("%d panics on malformed messages", st.Panics)
	}
	// The link and the node still serve.
	if err := b.SendTo(ctx, a.Address(), []byte("still"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, a); string(e.Payload) != "still" {
		t.Fatalf("got %+v", e)
	}
}

// FuzzFedDeliver: any bytes from another node, delivered to a node that
// has a connection: nothing panics, and the node still serves.
func FuzzFedDeliver(f *testing.F) {
	enc := func(m *pb.FedMessage) []byte { b, _ := gproto.Marshal(m); return b }
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 5, Groups: []string{"g"}}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: 5, To: 1, Payload: []byte("x"), Rid: 3}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: 1, From: 5, To: 1, Dest: "g"}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_Reply{Reply: &pb.FedReply{Rid: 1, Code: 99}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_State{State: &pb.FedState{Conns: []*pb.FedConn{{Id: 6}, {Id: 6}}}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_ConnDown{ConnDown: &pb.FedConnDown{Id: 5, Reason: 77}}}))
	f.Add([]byte{0x9a, 0x06, 0x00})
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_Claims{Claims: &pb.FedClaims{Name: "svc", Claims: []*pb.FedClaim{{Id: 5, Owner: true}}, BelievedOwner: ":n2.x1.9"}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: "svc", Queue: []string{":n2.x1.5", ":n1.zz.3"}}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_ClaimsAsk{ClaimsAsk: &pb.FedClaimsAsk{Name: "svc"}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_NamesResync{NamesResync: &pb.FedNamesResync{Held: []*pb.FedNameHeld{{Name: "svc", Owner: ":n2.x1.5"}, {Name: "other"}, {Name: ""}}}}}))
	f.Add(enc(&pb.FedMessage{Body: &pb.FedMessage_ClaimsAsk{ClaimsAsk: &pb.FedClaimsAsk{Name: "bad name\x00"}}}))
	cl := newFakeCluster()
	n1 := startFedNode(f, cl, "n1")
	path := n1.SocketPath()
	c, err := Dial(context.Background(), WithSocket(path))
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(context.Background(), "g"); err != nil {
		f.Fatal(err)
	}
	fs := n1.fed
	fs.NodeUp("n2", "x1")
	f.Fuzz(func(t *testing.T, msg []byte) {
		fs.Deliver("n2", msg)
		fs.Deliver("n3", msg) // a node that is not up
		if p := n1.FederationStats().Panics; p != 0 {
			t.Fatalf("%d panics delivering %x", p, msg)
		}
	})
	if _, err := c.Call(context.Background(), SystemService, SysPing, nil); err != nil {
		f.Fatal(err)
	}
}

// TestFedLocalAllocs: with a Federation set and another node up, the
// local Call, Publish and SendTo paths allocate what they do on a node
// without one.
func TestFedLocalAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	if raceEnabled {
		t.Skip("allocation counts: not under -race")
	}
	measure := func(n *Node) [3]float64 {
		echoService(n)
		c := dial(t, n)
		peer := dial(t, n)
		ctx := context.Background()
		if err := peer.Subscribe(ctx, "local.g"); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 64)
		call := func() { c.Call(ctx, svcEcho, cmdEcho, p) }
		pub := func() { c.PublishBuffers(ctx, "local.g", net.Buffers{p}) }
		send := func() { c.SendTo(ctx, peer.Address(), p) }
		var out [3]float64
		for i, f := range []func(){call, pub, send} {
			f()
			out[i] = testing.AllocsPerRun(300, f)
		}
		return out
	}
	alone := measure(startNode(t))
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	remote := dial(t, n2)
	if err := remote.Subscribe(context.Background(), "elsewhere"); err != nil {
		t.Fatal(err)
	}
	knows(t, n1, remote.Address(), "elsewhere")
	fed := measure(n1)
	t.Logf("allocations per Call, Publish, SendTo: alone %v, federated %v", alone, fed)
	for i, name := range []string{"Call", "Publish", "SendTo"} {
		if fed[i] > alone[i] {
			t.Errorf("%s: %v allocations federated, %v alone", name, fed[i], alone[i])
		}
	}
}

// TestFedThreeNodes: three nodes, two senders on different nodes
// publishing to a group with members on all three: a publication crosses
// each link once (two members on n3, one message to n3), every member gets
// every sender's publications in that sender's order, and a group request
// gathers the answers of all.
func TestFedThreeNodes(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	n3 := startFedNode(t, cl, "n3")
	waitMesh(t, n1, n2, n3)
	ctx := ctx5(t)
	answer := func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte("ok"), nil }
	var members []*Conn
	for _, n := range []*Node{n1, n2, n3, n3} {
		m := dial(t, n, WithRequestHandler(answer))
		if err := m.Subscribe(ctx, "fan"); err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	s1, s2 := dial(t, n1), dial(t, n2)
	for _, n := range []*Node{n1, n2, n3} {
		for _, m := range members {
			if m.Address()[:4] != n.addrPrefix[:4] {
				knows(t, n, m.Address(), "fan")
			}
		}
	}
	for _, n := range []*Node{n2, n3} {
		knows(t, n, s1.Address())
	}
	sent := n1.FederationStats().Sent
	const count = 200
	for i := range count {
		for _, s := range []*Conn{s1, s2} {
			if err := s.Publish(ctx, "fan", seqPayload('p', i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range members {
		next := map[string]int{}
		for range 2 * count {
			e := recv(t, m)
			i := int(binary.LittleEndian.Uint32(e.Payload[1:]))
			if i != next[e.From] {
				t.Fatalf("%s: from %s got %d, want %d", m.Address(), e.From, i, next[e.From])
			}
			next[e.From]++
		}
		if next[s1.Address()] != count || next[s2.Address()] != count {
			t.Fatalf("%s: got %v", m.Address(), next)
		}
	}
	// n1's publications: one message per publication to n2 and to n3
	// (n3 has two members), and nothing else.
	if d := n1.FederationStats().Sent - sent; d != 2*count {
		t.Fatalf("n1 sent %d messages for %d publications to 2 nodes", d, count)
	}
	res, err := s2.RequestGroup(ctx, "fan", []byte("q"))
	if err != nil || len(res) != len(members) {
		t.Fatalf("group request: %+v %v", res, err)
	}
	for _, r := range res {
		if r.Err != nil || string(r.Payload) != "ok" {
			t.Fatalf("%s: %q %v", r.Address, r.Payload, r.Err)
		}
	}
}

// TestFedGroupWatchers: a member that subscribed with members hears of
// members joining on another node, and of their loss with that node.
func TestFedGroupWatchers(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	w := dial(t, n2)
	if ms, err := w.SubscribeWithMembers(ctx, "w"); err != nil || len(ms) != 1 {
		t.Fatalf("%+v %v", ms, err)
	}
	a := dial(t, n1)
	if err := a.Subscribe(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	nt := notices(t, w, 1)[0]
	if nt.Kind != NoticeSubscribed || nt.Member.Address != a.Address() || nt.Member.Cred.Node != "n1" || nt.Group != "w" {
		t.Fatalf("subscribed notice %+v", nt)
	}
	cl.down("n1", "gone")
	nt = notices(t, w, 1)[0]
	if nt.Kind != NoticeUnsubscribed || nt.Member.Address != a.Address() || nt.Reason != DisconnectNodeLost {
		t.Fatalf("unsubscribed notice %+v", nt)
	}
	if ms, err := w.Members(ctx, "w"); err != nil || len(ms) != 1 || ms[0].Address != w.Address() {
		t.Fatalf("members after n1 left: %+v %v", ms, err)
	}
}

// BenchmarkFedLocal: the local rows on a node alone and on a node with a
// Federation and another node up (with a remote member of another group):
// the lead compares their times in a quiet sitting; -benchmem shows the
// allocations, which TestFedLocalAllocs asserts equal.
func BenchmarkFedLocal(b *testing.B) {
	run := func(b *testing.B, n *Node) {
		echoService(n)
		c := dial(b, n)
		peer := dial(b, n)
		ctx := context.Background()
		if err := peer.Subscribe(ctx, "local.g"); err != nil {
			b.Fatal(err)
		}
		p := make([]byte, 64)
		b.Run("Call", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Call(ctx, svcEcho, cmdEcho, p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Publish", func(b *testing.B) {
			b.ReportAllocs()
			go func() {
				for {
					if _, err := peer.RecvEvent(ctx); err != nil {
						return
					}
				}
			}()
			for b.Loop() {
				if err := c.Publish(ctx, "local.g", p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("alone", func(b *testing.B) { run(b, startNode(b)) })
	b.Run("federated", func(b *testing.B) {
		// One other node up, with a member of another group, and no
		// node of its own in this process (whose goroutines would
		// share the CPUs): the node's local paths with a Federation.
		n1 := startFedNode(b, newFakeCluster(), "n1")
		fs := n1.fed
		fs.NodeUp("n2", "x1")
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 1, ClientName: "r"}}}))
		fs.Deliver("n2", fedEnc(&pb.FedMessage{Body: &pb.FedMessage_Join{Join: &pb.FedMembership{Id: 1, Group: "elsewhere"}}}))
		if ms := fs.remoteMembers("elsewhere"); len(ms) != 1 {
			b.Fatalf("remote members of elsewhere: %v", ms)
		}
		run(b, n1)
	})
	b.Run("federated-adaptive", func(b *testing.B) {
		// The same, with the Ps governed as cmd/node's procs = "auto"
		// does with [cluster] on.
		n1 := startFedNode(b, newFakeCluster(), "n1", WithAdaptiveProcs())
		fs := n1.fed
		fs.NodeUp("n2", "x1")
		run(b, n1)
		b.Logf("the governor: %+v", n1.Procs()) // did it move (-v)
	})
}

// TestFedRequestEnds: a remote request's context follows its caller
// across the link: cancelled when the caller gives up, when the caller's
// node is lost; and a target that disconnects fails its remote caller with
// ErrPeerGone.
func TestFedRequestEnds(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	started := make(chan struct{}, 4)
	ended := make(chan error, 4)
	b := dial(t, n2, WithRequestConcurrency(4), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return nil, ctx.Err()
	}))
	a := dial(t, n1)
	knows(t, n1, b.Address())
	knows(t, n2, a.Address())
	// The caller gives up.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := a.Request(ctx, b.Address(), nil); errc <- err }()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the remote handler's context did not end when its caller cancelled")
	}
	// The target disconnects.
	b2 := dial(t, n2, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	knows(t, n1, b2.Address())
	go func() { _, err := a.Request(context.Background(), b2.Address(), nil); errc <- err }()
	<-started
	b2.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerGone) {
			t.Fatalf("request to a target that left: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not fail when its remote target left")
	}
	// The caller's node is lost.
	go func() { _, err := a.Request(context.Background(), b.Address(), nil); errc <- err }()
	<-started
	cl.down("n1", "cut off")
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the remote handler's context did not end when its caller's node was lost")
	}
	if err := <-errc; !errors.Is(err, ErrPeerGone) {
		t.Fatalf("request from a node cut off: %v", err)
	}
}

// TestFedOrderAcrossKinds: a sender's direct messages and publications to
// one connection on another node arrive in the order they were sent,
// whatever the link delivers in one pass (publications in a row are
// handed over together; anything else goes after them).
func TestFedOrderAcrossKinds(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	b := dial(t, n2)
	if err := b.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	a := dial(t, n1)
	knows(t, n1, b.Address(), "g")
	const n = 3000
	done := make(chan error, 1)
	go func() {
		for i := range n {
			e, err := b.RecvEvent(ctx)
			if err != nil {
				done <- err
				return
			}
			if got := int(binary.LittleEndian.Uint32(e.Payload[1:])); got != i {
				done <- fmt.Errorf("event %d (%v) carries %d: out of the order sent", i, e.Kind, got)
				return
			}
		}
		done <- nil
	}()
	for i := range n {
		var err error
		if (i/3)%2 == 0 { // three publications, three direct messages, …
			err = a.Publish(ctx, "g", seqPayload('g', i))
		} else {
			err = a.SendTo(ctx, b.Address(), seqPayload('d', i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := n2.FederationStats(); st.Received < n {
		t.Fatalf("n2 received %d messages from the link, want at least %d", st.Received, n)
	}
}

// TestFedLargePublications: publications large enough to be handed to
// their members as they came off the link (fedCopyMin) arrive whole and in
// order, at a member that reads as they come and at one that reads only
// after the last was published: more than its client's queue (1024
// events) and its event ring (1 MiB) take, so that hundreds waited in the
// node's queue for it. The publisher keeps within what the members can
// hold (it waits for the first to read each window of 100 but the last):
// past that, the node drops the oldest, counted.
func TestFedLargePublications(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	fast, slow := dial(t, n2), dial(t, n2)
	for _, c := range []*Conn{fast, slow} {
		if err := c.Subscribe(ctx, "big"); err != nil {
			t.Fatal(err)
		}
	}
	a := dial(t, n1)
	knows(t, n1, fast.Address(), "big")
	knows(t, n1, slow.Address(), "big")
	const count, window = 1500, 100
	payload := func(i int) []byte {
		p := make([]byte, fedCopyMin+i%8*100)
		for j := range p {
			p[j] = byte(i*31 + j*7)
		}
		return p
	}
	check := func(c *Conn, read chan<- int) error {
		for i := range count {
			e, err := c.RecvEvent(ctx)
			if err != nil {
				return err
			}
			if e.Kind != EventGroup || e.From != a.Address() || !bytes.Equal(e.Payload, payload(i)) || e.Dropped != 0 {
				return fmt.Errorf("%s: event %d: kind %v from %q, %d bytes, %d dropped before it; want publication %d from %q (%d bytes)",
					c.Address(), i, e.Kind, e.From, len(e.Payload), e.Dropped, i, a.Address(), len(payload(i)))
			}
			if read != nil && (i+1)%window == 0 {
				read <- i + 1
			}
		}
		return nil
	}
	done, read := make(chan error, 1), make(chan int, count/window)
	go func() { done <- check(fast, read) }()
	for i := range count {
		if i >= 2*window && i%window == 0 {
			select { // fast read all but the last window
			case <-read:
			case err := <-done:
				t.Fatalf("fast member: %v", err)
			}
		}
		if err := a.Publish(ctx, "big", payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := check(slow, nil); err != nil {
		t.Fatal(err)
	}
}

// TestFedPublishManyNodes: a publication reaches every member once on
// each of six other nodes, crossing to each node once, with more nodes
// than a publication's route keeps by value (fedFew): the publisher's
// node looks them up again.
func TestFedPublishManyNodes(t *testing.T) {
	cl := newFakeCluster()
	ns := []*Node{startFedNode(t, cl, "n0")}
	for i := 1; i <= fedFew+2; i++ {
		ns = append(ns, startFedNode(t, cl, fmt.Sprintf("n%d", i)))
	}
	waitMesh(t, ns...)
	ctx := ctx5(t)
	a := dial(t, ns[0])
	var members []*Conn
	for _, n := range ns[1:] {
		for range 2 {
			m := dial(t, n)
			if err := m.Subscribe(ctx, "g"); err != nil {
				t.Fatal(err)
			}
			members = append(members, m)
		}
	}
	for _, n := range ns { // every announcement has arrived everywhere
		for _, m := range append([]*Conn{a}, members...) {
			if strings.HasPrefix(m.Address(), n.addrPrefix) {
				continue // its own
			}
			if m == a {
				knows(t, n, m.Address())
			} else {
				knows(t, n, m.Address(), "g")
			}
		}
	}
	before := make([]uint64, len(ns))
	for i, n := range ns {
		before[i] = n.FederationStats().Received
	}
	const count = 3
	for i := range count {
		if err := a.Publish(ctx, "g", seqPayload('p', i), WantAnswer()); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range members {
		for i := range count {
			e, err := m.RecvEvent(ctx)
			if err != nil || e.Kind != EventGroup || !bytes.Equal(e.Payload, seqPayload('p', i)) {
				t.Fatalf("%s: event %d: %+v %v", m.Address(), i, e, err)
			}
		}
	}
	for i, n := range ns[1:] {
		if got := n.FederationStats().Received - before[i+1]; got != count {
			t.Errorf("%s received %d messages for %d publications", n.ClusterNodes().Node, got, count)
		}
	}
}
