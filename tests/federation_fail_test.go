package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// More federation tests with real node processes: a hung node (SIGSTOP),
// a restarted node, names with standbys across nodes, a 16 MiB message,
// a stalled remote subscriber, policy on remote credentials.

// fedConfig is node i's configuration in a cluster of n on loopback
// (127.0.0.1:7951+i), with extra appended (top-level keys before any
// table: extra is added before [cluster] when it starts with no table).
func fedConfig(t *testing.T, i, n int, top, tables string) string {
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 7951+i) }
	var peers []string
	for j := range n {
		if j != i {
			peers = append(peers, fmt.Sprintf("%q", addr(j)))
		}
	}
	return fmt.Sprintf("name = \"n%d\"\n%s\n[cluster]\nenabled = true\nlisten = %q\npeers = [%s]\nsecret_file = %q\n%s\n",
		i+1, top, addr(i), strings.Join(peers, ", "), fedSecret(t), tables)
}

// fedClusterWith starts n nodes with cfg(i) as node i's configuration.
func fedClusterWith(t *testing.T, n int, cfg func(i int) string) []*daemon {
	t.Helper()
	var ds []*daemon
	for i := range n {
		ds = append(ds, startDaemon(t, daemonOpts{config: cfg(i)}))
	}
	return ds
}

// nextNotice reads c's events until a notice for which match is true,
// and returns it; other events are skipped.
func nextNotice(t *testing.T, c *switchboard.Conn, within time.Duration, match func(switchboard.Notice) bool) switchboard.Notice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var seen []string // the notices that did not match, for the failure's message
	for {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			t.Fatalf("waiting for a notice: %v; the others seen: %v", err, seen)
		}
		if e.Kind != switchboard.EventNotice {
			continue
		}
		n, err := e.Notice()
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, fmt.Sprintf("%v %s%s %q", n.Kind, n.Member.Address, n.Node, n.Detail))
		if match(n) {
			return n
		}
	}
}

// nodeOf returns the node name and incarnation of an address :NODE.INC.ID.
func nodeOf(addr string) (node, inc string) {
	f := strings.Split(strings.TrimPrefix(addr, ":"), ".")
	if len(f) < 3 {
		return "", ""
	}
	return f[0], f[1]
}

// quiet checks that c receives no bus message from a connection of node
// (by address prefix) for d.
func quiet(t *testing.T, c *switchboard.Conn, prefix string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			return
		}
		if e.Kind != switchboard.EventNotice && strings.HasPrefix(e.From, prefix) {
			t.Fatalf("a %v from the fenced node's %s was delivered: %q", e.Kind, e.From, e.Payload)
		}
	}
}

// TestFederationHungNode: a node stopped (SIGSTOP) for 3 s is declared
// down by the others within about the link timeout: a request waiting on
// it fails with ErrPeerGone, its connections are announced disconnected
// with DisconnectNodeLost, then its departure on sys.nodes. Its own
// clients keep talking to each other; when it resumes, its silent session
// stays fenced and it links again as a new one (joined again, its state
// resent), and traffic flows.
func TestFederationHungNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	if !inFedNetns(t) {
		return
	}
	ds := fedCluster(t, 3)
	served := make(chan struct{}, 1)
	handler := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
		served <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	c1 := fedDial(t, ds[0])
	c2 := fedDial(t, ds[1])
	c3 := fedDial(t, ds[2], switchboard.WithRequestHandler(handler))
	c3b := fedDial(t, ds[2])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []*switchboard.Conn{c1, c3, c3b} {
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{switchboard.GroupConnections, switchboard.GroupNodes} {
		if err := c2.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	waitMembers(t, c1, "g", 3)
	waitMembers(t, c2, "g", 3)
	waitMembers(t, c3, "g", 3)

	errc := make(chan error, 1)
	go func() {
		_, err := c1.Request(ctx, c3.Address(), []byte("block"))
		errc <- err
	}()
	select {
	case <-served:
	case <-time.After(30 * time.Second):
		t.Fatal("the request did not reach c3")
	}
	stopped := time.Now()
	ds[2].signal(t, syscall.SIGSTOP)
	cont := func() { ds[2].cmd.Process.Signal(syscall.SIGCONT) }
	defer cont() // also on failure, so that the cleanup's SIGTERM works
	select {
	case err := <-errc:
		if !errors.Is(err, switchboard.ErrPeerGone) {
			t.Fatalf("a request to a hung node's client: %v, want ErrPeerGone", err)
		}
		t.Logf("a request to a hung node's client failed %v after SIGSTOP", time.Since(stopped).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("a request to a hung node's client did not fail")
	}

	// c2 (on n2) hears both of n3's clients disconnected for the node's
	// loss, then n3 leave.
	n3, inc3 := nodeOf(c3.Address())
	gone := map[string]bool{}
	for len(gone) < 2 {
		n := nextNotice(t, c2, 10*time.Second, func(n switchboard.Notice) bool {
			return n.Kind == switchboard.NoticeDisconnected || n.Kind == switchboard.NoticeNodeLeft
		})
		if n.Kind == switchboard.NoticeNodeLeft {
			t.Fatalf("n3 left before its connections were announced disconnected (%v)", gone)
		}
		if a := n.Member.Address; a == c3.Address() || a == c3b.Address() {
			if n.Reason != switchboard.DisconnectNodeLost {
				t.Fatalf("%s disconnected with reason %v, want %v", a, n.Reason, switchboard.DisconnectNodeLost)
			}
			gone[a] = true
		}
	}
	left := nextNotice(t, c2, 10*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeLeft })
	if left.Node != n3 || left.Incarnation != inc3 {
		t.Fatalf("node left: %s.%s, want %s.%s", left.Node, left.Incarnation, n3, inc3)
	}
	t.Logf("n2 announced n3 left %v after SIGSTOP (%s)", time.Since(stopped).Round(time.Millisecond), left.Detail)
	waitMembers(t, c1, "g", 1)

	time.Sleep(time.Until(stopped.Add(3 * time.Second)))
	cont()
	// Its local clients keep working with each other meanwhile.
	for i := range 50 {
		if err := c3.SendTo(ctx, c3b.Address(), seqPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	recvSeq(t, c3b, switchboard.EventMessage, c3.Address(), 50)
	// The session that went silent stays fenced; n3, the same run, links
	// again as a new session: the others hear it join, its state is sent
	// afresh (its members are seen again), and traffic flows in order.
	joined := nextNotice(t, c2, 30*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeJoined })
	if joined.Node != n3 || joined.Incarnation != inc3 {
		t.Fatalf("node joined: %s.%s, want %s.%s again", joined.Node, joined.Incarnation, n3, inc3)
	}
	t.Logf("n3 linked again %v after SIGCONT", time.Since(stopped.Add(3*time.Second)).Round(time.Millisecond))
	waitMembers(t, c1, "g", 3)
	waitMembers(t, c3, "g", 3)
	for i := range 200 {
		if err := c3.SendTo(ctx, c1.Address(), seqPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	recvSeq(t, c1, switchboard.EventMessage, c3.Address(), 200)
}

// TestFederationRestart: a node stopped (SIGTERM) and started again with
// the same name and port comes back as a new incarnation: the others
// hear it leave and join, its new clients' subscriptions are seen
// cluster-wide, it learns the others' state (members and names; a name
// its former run owned is nobody's), and messages flow again; an address
// of its former run finds nobody.
func TestFederationRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	if !inFedNetns(t) {
		return
	}
	ds := fedCluster(t, 3)
	c1 := fedDial(t, ds[0])
	c2 := fedDial(t, ds[1])
	c3 := fedDial(t, ds[2])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []*switchboard.Conn{c1, c2, c3} {
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.Subscribe(ctx, switchboard.GroupNodes); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c1, "g", 3)
	waitMembers(t, c2, "g", 3)
	old := c3.Address()
	_, oldInc := nodeOf(old)
	for _, o := range []struct {
		c    *switchboard.Conn
		name string
	}{{c1, "svc.one"}, {c3, "svc.three"}} {
		if primary, _, err := o.c.Own(ctx, o.name); err != nil || !primary {
			t.Fatalf("Own %s: %v, %v", o.name, primary, err)
		}
	}
	owner := func(x *switchboard.Conn, name string) (string, error) {
		ns, err := x.Names(ctx)
		for _, n := range ns {
			if n.Name == name {
				return n.Owner, err
			}
		}
		return "", err
	}
	checkFor(t, 10*time.Second, func() error {
		if o, err := owner(c2, "svc.three"); err != nil || o != old {
			return fmt.Errorf("svc.three seen from n2: owner %q, %v; want %s", o, err, old)
		}
		return nil
	})

	if code := ds[2].stop(t); code != 0 {
		t.Fatalf("n3 exited with %d", code)
	}
	left := nextNotice(t, c1, 10*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeLeft })
	if left.Node != "n3" || left.Incarnation != oldInc {
		t.Fatalf("node left: %s.%s, want n3.%s", left.Node, left.Incarnation, oldInc)
	}
	d3 := startDaemon(t, daemonOpts{config: fedConfig(t, 2, 3, "", "")})
	joined := nextNotice(t, c1, 20*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeJoined })
	if joined.Node != "n3" || joined.Incarnation == oldInc || joined.Incarnation == "" {
		t.Fatalf("node joined: %s.%s, want n3 with an incarnation other than %s", joined.Node, joined.Incarnation, oldInc)
	}
	n3 := fedDial(t, d3)
	if _, inc := nodeOf(n3.Address()); inc != joined.Incarnation {
		t.Fatalf("the new client's address %s is not of the incarnation that joined, %s", n3.Address(), joined.Incarnation)
	}
	if err := n3.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	// Every node sees the new member; the new node sees the others'.
	waitMembers(t, c1, "g", 3)
	waitMembers(t, c2, "g", 3)
	waitMembers(t, n3, "g", 3)
	ms, err := c2.Members(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, m := range ms {
		addrs = append(addrs, m.Address)
		if m.Address == old {
			t.Fatalf("the former run's client is still listed: %v", addrs)
		}
	}
	if !strings.Contains(strings.Join(addrs, " "), n3.Address()) {
		t.Fatalf("members of g on n2: %v, without %s", addrs, n3.Address())
	}

	// Names too: the new run learns svc.one's owner on n1, and svc.three,
	// whose owner went with the former run, is nobody's anywhere.
	checkFor(t, 10*time.Second, func() error {
		for _, x := range []*switchboard.Conn{c1, c2, n3} {
			if o, err := owner(x, "svc.one"); err != nil || o != c1.Address() {
				return fmt.Errorf("svc.one seen from %s: owner %q, %v; want %s", x.Address(), o, err, c1.Address())
			}
			if o, err := owner(x, "svc.three"); err != nil || o != "" {
				return fmt.Errorf("svc.three seen from %s: owner %q, %v; want none", x.Address(), o, err)
			}
		}
		return nil
	})
	if err := n3.SendTo(ctx, "svc.one", []byte("x"), switchboard.WantAnswer()); err != nil {
		t.Fatalf("SendTo svc.one from the new run: %v", err)
	}

	const n = 500
	for i := range n {
		if err := c1.Publish(ctx, "g", seqPayload(i)); err != nil {
			t.Fatal(err)
		}
		if err := n3.SendTo(ctx, c2.Address(), seqPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	recvSeq(t, n3, switchboard.EventGroup, c1.Address(), n)
	recvSeq(t, c2, switchboard.EventMessage, n3.Address(), n)
	if err := c1.SendTo(ctx, old, []byte("x"), switchboard.WantAnswer()); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Fatalf("SendTo the former run's address %s with WantAnswer: %v, want ErrUndeliverable", old, err)
	}
}

// TestFederationNameStandbys: one name claimed by a client on each of
// three nodes; the owner's node is killed: the next standby, on another
// node, becomes the owner everywhere, and messages to the name reach it.
func TestFederationNameStandbys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	if !inFedNetns(t) {
		return
	}
	ds := fedCluster(t, 3)
	a := fedDial(t, ds[0])
	b := fedDial(t, ds[1])
	c := fedDial(t, ds[2])
	w := fedDial(t, ds[2]) // a watcher on sys.names
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, x := range []*switchboard.Conn{a, b, c} {
		if err := x.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	waitMembers(t, a, "g", 3)
	waitMembers(t, b, "g", 3)
	waitMembers(t, c, "g", 3)
	if err := w.Subscribe(ctx, switchboard.GroupNames); err != nil {
		t.Fatal(err)
	}
	const name = "svc.standby"
	for i, x := range []*switchboard.Conn{a, b, c} {
		primary, pos, err := x.Own(ctx, name)
		if err != nil || primary != (i == 0) || pos != i {
			t.Fatalf("Own %s by the client on n%d: primary %v, position %d, %v; want %v, %d", name, i+1, primary, pos, err, i == 0, i)
		}
	}
	checkNames := func(x *switchboard.Conn, owner string, standby ...string) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			ns, err := x.Names(ctx)
			if err != nil {
				return err
			}
			for _, n := range ns {
				if n.Name == name {
					if n.Owner != owner || strings.Join(n.Standby, " ") != strings.Join(standby, " ") {
						return fmt.Errorf("%s: owner %s, standby %v; want %s, %v", name, n.Owner, n.Standby, owner, standby)
					}
					return nil
				}
			}
			return fmt.Errorf("%s not listed in %v", name, ns)
		})
	}
	checkNames(c, a.Address(), b.Address(), c.Address())
	checkNames(b, a.Address(), b.Address(), c.Address())
	nextNotice(t, w, 10*time.Second, func(n switchboard.Notice) bool {
		return n.Kind == switchboard.NoticeNameOwnerChanged && n.Name == name && n.NewOwner == a.Address()
	})

	ds[0].cmd.Process.Kill()
	nt := nextNotice(t, w, 10*time.Second, func(n switchboard.Notice) bool {
		return n.Kind == switchboard.NoticeNameOwnerChanged && n.Name == name
	})
	if nt.OldOwner != a.Address() || nt.NewOwner != b.Address() {
		t.Fatalf("%s: owner %q → %q, want %s → %s", name, nt.OldOwner, nt.NewOwner, a.Address(), b.Address())
	}
	nextNotice(t, b, 10*time.Second, func(n switchboard.Notice) bool {
		return n.Kind == switchboard.NoticeNameAcquired && n.Name == name
	})
	checkNames(c, b.Address(), c.Address())
	checkNames(b, b.Address(), c.Address())
	const n = 200
	for i := range n {
		if err := c.SendTo(ctx, name, seqPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	recvSeq(t, b, switchboard.EventMessage, c.Address(), n)
}

// TestFederationLargeMessage: a 16 MiB message (the default max_message)
// crosses a link intact, to a client and as a request to a peer (the
// link's limit is max_message plus the envelope, FederationOverhead).
func TestFederationLargeMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes")
	}
	if !inFedNetns(t) {
		return
	}
	// A client takes a message no larger than its event ring and the
	// node's queue for it hold together: 16 MiB needs a larger queue.
	ds := fedClusterWith(t, 2, func(i int) string { return fedConfig(t, i, 2, "", "[events]\nqueue_bytes = 33554432") })
	echo := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
		sum := sha256.Sum256(r.Payload)
		return sum[:], nil
	}
	c1 := fedDial(t, ds[0])
	c2 := fedDial(t, ds[1], switchboard.WithRequestHandler(echo))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c2.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c1, "g", 1)
	big := make([]byte, 16<<20)
	rand.Read(big)
	want := sha256.Sum256(big)
	if err := c1.SendTo(ctx, c2.Address(), big, switchboard.WantAnswer()); err != nil {
		t.Fatalf("SendTo 16 MiB across the link: %v", err)
	}
	for {
		e, err := c2.RecvEvent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != switchboard.EventMessage {
			continue
		}
		if got := sha256.Sum256(e.Payload); e.From != c1.Address() || len(e.Payload) != len(big) || got != want {
			t.Fatalf("received %d bytes from %s, sha256 %x; want %d from %s, %x", len(e.Payload), e.From, got, len(big), c1.Address(), want)
		}
		break
	}
	got, err := c1.Request(ctx, c2.Address(), big)
	if err != nil || !bytes.Equal(got, want[:]) {
		t.Fatalf("a 16 MiB request across the link: answer %x, %v; want %x", got, err, want)
	}
}

// TestFederationPolicyRemote: n1's policy admits connections of another
// node only by node name (nodes = [...]): a client on n2, admitted, sends,
// requests and publishes to n1's clients; one on n3, not admitted, is
// refused (ErrRefused for what wants an answer; its publications reach
// nobody on n1), while n1's own clients are admitted by all = true.
func TestFederationPolicyRemote(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	if !inFedNetns(t) {
		return
	}
	const policy = `[policy]
default = "allow"
[[policy.name]]
name = ":n1.*"
send = { all = true, nodes = ["n2"] }
[[policy.group]]
group = "g.*"
publish = { all = true, nodes = ["n2"] }
`
	ds := fedClusterWith(t, 3, func(i int) string {
		if i == 0 {
			return fedConfig(t, i, 3, "", policy)
		}
		return fedConfig(t, i, 3, "", "")
	})
	echo := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) { return r.Payload, nil }
	s := fedDial(t, ds[0], switchboard.WithRequestHandler(echo))
	local := fedDial(t, ds[0])
	c2 := fedDial(t, ds[1])
	c3 := fedDial(t, ds[2])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Subscribe(ctx, "g.x"); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c2, "g.x", 1)
	waitMembers(t, c3, "g.x", 1)

	for _, tc := range []struct {
		c     *switchboard.Conn
		allow bool
	}{{local, true}, {c2, true}, {c3, false}} {
		who := tc.c.Address()
		err := tc.c.SendTo(ctx, s.Address(), []byte("m"), switchboard.WantAnswer())
		if tc.allow != (err == nil) || !tc.allow && !errors.Is(err, switchboard.ErrRefused) {
			t.Fatalf("SendTo from %s: %v; want allowed %v (else ErrRefused)", who, err, tc.allow)
		}
		got, err := tc.c.Request(ctx, s.Address(), []byte("q"))
		if tc.allow != (err == nil) || !tc.allow && !errors.Is(err, switchboard.ErrRefused) || tc.allow && string(got) != "q" {
			t.Fatalf("Request from %s: %q, %v; want allowed %v (else ErrRefused)", who, got, err, tc.allow)
		}
		// A publication, then a message on the same link: once the message
		// is in, the publication was delivered before it, or refused.
		if err := tc.c.Publish(ctx, "g.x", []byte("p")); err != nil {
			t.Fatal(err)
		}
		if err := tc.c.SendTo(ctx, s.Address(), []byte("end"), switchboard.WantAnswer()); tc.allow != (err == nil) {
			t.Fatalf("SendTo from %s: %v", who, err)
		}
		if tc.allow {
			want := []struct {
				kind    switchboard.EventKind
				payload string
			}{{switchboard.EventMessage, "m"}, {switchboard.EventGroup, "p"}, {switchboard.EventMessage, "end"}}
			for i := 0; i < len(want); {
				e, err := s.RecvEvent(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if e.From != who || e.Kind == switchboard.EventNotice {
					continue
				}
				if e.Kind != want[i].kind || string(e.Payload) != want[i].payload {
					t.Fatalf("from %s, event %d: kind %d %q; want kind %d %q", who, i, e.Kind, e.Payload, want[i].kind, want[i].payload)
				}
				i++
			}
		}
	}
	quiet(t, s, c3.Address(), time.Second)
}

// TestFederationStalledSubscriber: two members of a group on n2, one of
// which stops reading, and a publisher on n1 publishing far more than the
// link's budget and n2's queues hold. The publisher never blocks: each
// publication is taken by the link or refused at once (the budget spent:
// the publisher, which wants an answer, hears ErrUndeliverable, not
// ErrTooLarge); the reading member
// keeps receiving; and for each member every publication the link took
// is either received or counted in the Dropped of a later event: nothing
// is lost silently.
func TestFederationStalledSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes")
	}
	if !inFedNetns(t) {
		return
	}
	// A small budget, so that the link fills too, not only the queues.
	ds := fedClusterWith(t, 2, func(i int) string {
		return fedConfig(t, i, 2, "max_message = 65536", fmt.Sprintf("link_budget = 262144\n\n[metrics]\nlisten = \"127.0.0.1:%d\"\n", 9471+i))
	})
	p := fedDial(t, ds[0])
	// The stalled member's own buffer holds 16 events: what it can hold in
	// all (that, its 1 MiB event ring and n2's 4 MiB queue: about 334
	// publications) is well under what the link takes (below).
	stalled := fedDial(t, ds[1], switchboard.WithEventQueue(16))
	reader := fedDial(t, ds[1])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []*switchboard.Conn{stalled, reader} {
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	waitMembers(t, p, "g", 2)

	// The reader counts what it gets until the end marker.
	type tally struct {
		received, dropped, last int
		err                     error
	}
	// read counts what c gets from p (messages and publications, and the
	// drops the events tell of) until the message marker, or until c has
	// been quiet for quiet (if not 0).
	read := func(c *switchboard.Conn, marker string, quiet time.Duration) tally {
		tl := tally{last: -1}
		for {
			rctx, rcancel := ctx, context.CancelFunc(func() {})
			if quiet > 0 {
				rctx, rcancel = context.WithTimeout(ctx, quiet)
			}
			e, err := c.RecvEvent(rctx)
			rcancel()
			if err != nil {
				if quiet == 0 || ctx.Err() != nil {
					tl.err = err
				}
				return tl
			}
			tl.dropped += int(e.Dropped)
			if e.From != p.Address() {
				continue
			}
			tl.received++
			if e.Kind == switchboard.EventMessage {
				if string(e.Payload) == marker {
					return tl
				}
				continue
			}
			seq := int(binary.LittleEndian.Uint64(e.Payload))
			if seq <= tl.last {
				tl.err = fmt.Errorf("publication %d after %d", seq, tl.last)
				return tl
			}
			tl.last = seq
		}
	}
	readerDone := make(chan tally, 1)
	go func() { readerDone <- read(reader, "end", 0) }()

	// 16 KiB each, against a 256 KiB budget and 4 MiB of queue per
	// member: at least n publications, and on until the link has taken
	// minTaken (twice what the stalled member can hold), so that it drops.
	const n, minTaken, most = 3000, 800, 30000
	payload := make([]byte, 16<<10)
	taken, refused := 0, 0
	var slowest time.Duration
	for i := 0; i < n || taken < minTaken; i++ {
		if i == most {
			t.Fatalf("the link took %d of %d publications, want %d", taken, i, minTaken)
		}
		binary.LittleEndian.PutUint64(payload, uint64(i))
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		err := p.Publish(pctx, "g", payload, switchboard.WantAnswer())
		slowest = max(slowest, time.Since(start))
		pcancel()
		switch {
		case err == nil:
			taken++
		case errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("publication %d blocked until its deadline: %v", i, err)
		case errors.Is(err, switchboard.ErrUndeliverable):
			refused++
			if refused == 1 {
				t.Logf("publication %d refused: %v", i, err)
			}
		default:
			t.Fatalf("publication %d: %v", i, err)
		}
	}
	t.Logf("%d publications taken by the link, %d refused (budget spent); the slowest Publish took %v", taken, refused, slowest)
	if refused == 0 {
		t.Fatalf("all %d publications taken: the link's budget never filled, so nothing here was tested against it", taken)
	}
	// n1 counts each refusal where an operator sees it: its metrics.
	fams := scrape(t, http.DefaultClient, "http://127.0.0.1:9471/metrics")
	failed := value(t, fams, "switchboard_federation_messages_total", map[string]string{"what": "send_failed"})
	overflow := value(t, fams, "switchboard_federation_link_events_total", map[string]string{"what": "overflow"})
	if failed != float64(refused) || overflow != float64(refused) {
		t.Fatalf("n1's metrics count %v messages a link refused, %v over the budget; want %d", failed, overflow, refused)
	}
	for _, c := range []*switchboard.Conn{reader, stalled} {
		if err := p.SendTo(ctx, c.Address(), []byte("end")); err != nil {
			t.Fatal(err)
		}
	}
	rt := <-readerDone
	if rt.err != nil {
		t.Fatalf("the reading member: %v", rt.err)
	}
	t.Logf("the reading member received %d publications, %d counted dropped", rt.received-1, rt.dropped)
	if rt.received+rt.dropped != taken+1 {
		t.Fatalf("the reading member received %d publications and the marker and was told of %d dropped; want %d in all",
			rt.received, rt.dropped, taken+1)
	}
	if rt.received < 2 {
		t.Fatal("the reading member received no publication")
	}
	// The stalled member reads again: what it had kept, until quiet; then a
	// second marker, whose event carries the count of any drops after the
	// last event it had (the first marker's included).
	st1 := read(stalled, "end", time.Second)
	if err := p.SendTo(ctx, stalled.Address(), []byte("end2")); err != nil {
		t.Fatal(err)
	}
	st2 := read(stalled, "end2", 0)
	for _, err := range []error{st1.err, st2.err} {
		if err != nil {
			t.Fatalf("the stalled member: %v", err)
		}
	}
	got, dropped := st1.received+st2.received, st1.dropped+st2.dropped
	t.Logf("the stalled member received %d publications and markers, %d counted dropped; FlowControl %+v", got, dropped, stalled.FlowControl())
	if got+dropped != taken+2 {
		t.Fatalf("the stalled member received %d and was told of %d dropped: want %d in all (%d publications, 2 markers)",
			got, dropped, taken+2, taken)
	}
	if dropped == 0 {
		t.Fatal("the stalled member was told of no drop: its queues held everything?")
	}
}
