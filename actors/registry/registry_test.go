package registry_test

import (
	"slices"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/conn/conntest"
	"github.com/switchboard-ipc/switchboard/actors/group"
	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

type fixture struct {
	t   *testing.T
	sys *actor.ActorSystem
	sp  *conntest.Spawner
	reg *registry.Registry
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, sys: conntest.NewSystem(t)}
	f.sp = conntest.NewSpawner(t, f.sys)
	reg, err := registry.Start(f.sys, f.sp)
	if err != nil {
		t.Fatal(err)
	}
	f.reg = reg
	return f
}

// client starts endpoint id; if add, enters it in the registry and waits
// for its arrival to be announced. Its end removes it, as the node does.
func (f *fixture) client(id uint64, add bool) *conntest.Client {
	f.t.Helper()
	h := &conntest.Host{OnClosed: func(e *conn.Endpoint, why conn.Reason) { f.reg.Remove(e, why.Disconnect(), why.Text) }}
	c := conntest.Start(f.t, f.sys, f.sp, conn.Config{ID: id, Host: h})
	if add {
		done := make(chan struct{})
		f.reg.Add(c.EP, done)
		select {
		case <-done:
		case <-time.After(conntest.Timeout):
			f.t.Fatalf("conn %d: arrival not announced", id)
		}
	}
	return c
}

// join joins c to group through the registry's directory and waits for
// the answer, which comes once the registry announced it.
func (f *fixture) join(c *conntest.Client, group string, id uint64) {
	f.t.Helper()
	if err := f.reg.Groups().Join(group, c.EP, id, false); err != nil {
		f.t.Fatal(err)
	}
	answered(f.t, c, id)
}

func answered(t *testing.T, c *conntest.Client, id uint64) conntest.Frame {
	t.Helper()
	r := c.NextReply(conntest.Timeout)
	if r.ID != id || pb.Code(r.Aux) != pb.Code_CODE_OK {
		t.Fatalf("conn %d: reply to %d (%v %q), want a CODE_OK reply to %d", c.EP.ID(), r.ID, pb.Code(r.Aux), r.Body, id)
	}
	return r
}

func (f *fixture) own(c *conntest.Client, name string, id uint64) *pb.OwnReply {
	f.t.Helper()
	f.reg.Own(c.EP, name, id)
	var or pb.OwnReply
	if err := gproto.Unmarshal(answered(f.t, c, id).Body, &or); err != nil {
		f.t.Fatal(err)
	}
	return &or
}

// notice reads c's next notice and checks it against want.
func notice(t *testing.T, c *conntest.Client, wantTo string, want *pb.Notice) {
	t.Helper()
	n, to := c.NextNotice(conntest.Timeout)
	if to != wantTo || !gproto.Equal(n, want) {
		t.Fatalf("conn %d got notice %v (to %q), want %v (to %q)", c.EP.ID(), n, to, want, wantTo)
	}
}

func TestAddLookupRemove(t *testing.T) {
	f := newFixture(t)
	c1, c2 := f.client(1, true), f.client(2, true)
	if f.reg.Lookup(1) != c1.EP || f.reg.Lookup(2) != c2.EP || f.reg.Lookup(3) != nil {
		t.Fatal("Lookup does not find the connections added")
	}
	if n := f.reg.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	all := f.reg.All()
	slices.SortFunc(all, func(a, b *conn.Endpoint) int { return int(a.ID()) - int(b.ID()) })
	if !slices.Equal(all, []*conn.Endpoint{c1.EP, c2.EP}) {
		t.Fatalf("All = %v", all)
	}
	f.reg.Remove(c1.EP, pb.DisconnectReason_DISCONNECT_CLOSED, "bye")
	if f.reg.Lookup(1) != nil || f.reg.Len() != 1 || len(f.reg.All()) != 1 {
		t.Fatalf("after Remove: Lookup %v, Len %d", f.reg.Lookup(1), f.reg.Len())
	}
	f.reg.Remove(c1.EP, pb.DisconnectReason_DISCONNECT_CLOSED, "twice") // no double count
	if n := f.reg.Len(); n != 1 {
		t.Fatalf("Len after a second Remove = %d, want 1", n)
	}
}

func TestConnectedAndDisconnectSequence(t *testing.T) {
	f := newFixture(t)
	obs := f.client(1, true)
	f.join(obs, pb.GroupConnections, 1)
	f.join(obs, pb.GroupNames, 2)
	f.join(obs, pb.GroupGroups, 3)
	notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_SUBSCRIBED, Member: obs.EP.Member(), Group: pb.GroupGroups})

	c := f.client(2, true)
	notice(t, obs, pb.GroupConnections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_CONNECTED, Member: c.EP.Member()})
	f.join(c, "beta", 1)
	f.join(c, "alpha", 2)
	notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_SUBSCRIBED, Member: c.EP.Member(), Group: "beta"})
	notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_SUBSCRIBED, Member: c.EP.Member(), Group: "alpha"})
	f.own(c, "n.two", 3)
	f.own(c, "n.one", 4)
	for _, name := range []string{"n.two", "n.one"} {
		notice(t, obs, pb.GroupNames, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_OWNER_CHANGED, Name: name,
			NewOwner: c.EP.Address(), Member: c.EP.Member()})
	}

	f.reg.Remove(c.EP, pb.DisconnectReason_DISCONNECT_EVICTED, "too slow")
	lost := pb.DisconnectReason_DISCONNECT_EVICTED
	for _, g := range []string{"alpha", "beta"} {
		notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_UNSUBSCRIBED, Member: c.EP.Member(), Group: g,
			Reason: lost, Detail: "disconnected"})
	}
	for _, name := range []string{"n.one", "n.two"} {
		notice(t, obs, pb.GroupNames, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_OWNER_CHANGED, Name: name, OldOwner: c.EP.Address()})
	}
	notice(t, obs, pb.GroupConnections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_DISCONNECTED, Member: c.EP.Member(),
		Reason: lost, Detail: "too slow"})
	obs.NoEvent(20 * time.Millisecond)
	if f.reg.Owner("n.one") != nil || f.reg.NameCount() != 0 {
		t.Fatalf("names of a removed connection still owned: %v, %d", f.reg.Owner("n.one"), f.reg.NameCount())
	}
}

// TestLostChangeWaitsForRemove: a group may see a connection end before
// the node removes it; its groups are still announced in order, with the
// connection's reason, by the removal.
func TestLostChangeWaitsForRemove(t *testing.T) {
	f := newFixture(t)
	obs := f.client(1, true)
	f.join(obs, pb.GroupGroups, 1)
	notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_SUBSCRIBED, Member: obs.EP.Member(), Group: pb.GroupGroups})
	c := f.client(2, true)
	for i, g := range []string{"d", "c", "b", "a"} {
		f.join(c, g, uint64(i+1))
		notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_SUBSCRIBED, Member: c.EP.Member(), Group: g})
	}
	for _, g := range []string{"c", "a"} { // as the group actors would, first
		f.sys.Root.Send(f.reg.PID(), &group.Change{Group: g, Conn: c.EP, Lost: true})
	}
	f.reg.Remove(c.EP, pb.DisconnectReason_DISCONNECT_LOST, "gone")
	for _, g := range []string{"a", "b", "c", "d"} {
		notice(t, obs, pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_UNSUBSCRIBED, Member: c.EP.Member(), Group: g,
			Reason: pb.DisconnectReason_DISCONNECT_LOST, Detail: "disconnected"})
	}
	obs.NoEvent(20 * time.Millisecond)
}

func TestOwnQueuesAndHandsOver(t *testing.T) {
	f := newFixture(t)
	c1, c2, c3 := f.client(1, true), f.client(2, true), f.client(3, true)
	if or := f.own(c1, "n", 1); !or.GetPrimary() || or.GetPosition() != 0 {
		t.Fatalf("first Own: %v, want primary", or)
	}
	notice(t, c1, c1.EP.Address(), &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_ACQUIRED, Name: "n", NewOwner: c1.EP.Address()})
	if or := f.own(c2, "n", 1); or.GetPrimary() || or.GetPosition() != 1 {
		t.Fatalf("second Own: %v, want position 1", or)
	}
	if or := f.own(c3, "n", 1); or.GetPrimary() || or.GetPosition() != 2 {
		t.Fatalf("third Own: %v, want position 2", or)
	}
	if or := f.own(c1, "n", 2); !or.GetPrimary() { // asking again changes nothing
		t.Fatalf("owner's second Own: %v", or)
	}
	if f.reg.Owner("n") != c1.EP || f.reg.NameCount() != 1 || f.reg.Owner("m") != nil {
		t.Fatalf("Owner = %v, NameCount %d", f.reg.Owner("n"), f.reg.NameCount())
	}
	c2.NoEvent(20 * time.Millisecond) // standbys hear nothing

	f.reg.Release(c1.EP, "n", 3)
	answered(t, c1, 3)
	notice(t, c1, c1.EP.Address(), &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_LOST, Name: "n", OldOwner: c1.EP.Address(), NewOwner: c2.EP.Address()})
	notice(t, c2, c2.EP.Address(), &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_ACQUIRED, Name: "n", OldOwner: c1.EP.Address(), NewOwner: c2.EP.Address()})
	if f.reg.Owner("n") != c2.EP || f.reg.NameCount() != 1 {
		t.Fatalf("after Release: Owner = %v, NameCount %d", f.reg.Owner("n"), f.reg.NameCount())
	}

	// The owner's connection ends: the next standby gets the name.
	c2.Close()
	notice(t, c3, c3.EP.Address(), &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_ACQUIRED, Name: "n", OldOwner: c2.EP.Address(), NewOwner: c3.EP.Address()})
	if f.reg.Owner("n") != c3.EP || f.reg.NameCount() != 1 || f.reg.Lookup(2) != nil {
		t.Fatalf("after the owner left: Owner = %v, NameCount %d", f.reg.Owner("n"), f.reg.NameCount())
	}
	f.reg.Release(c3.EP, "n", 4)
	answered(t, c3, 4)
	notice(t, c3, c3.EP.Address(), &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_LOST, Name: "n", OldOwner: c3.EP.Address()})
	if f.reg.Owner("n") != nil || f.reg.NameCount() != 0 {
		t.Fatalf("after the last Release: Owner = %v, NameCount %d", f.reg.Owner("n"), f.reg.NameCount())
	}
	c1.NoEvent(0)
}

func TestOwnByAnUnknownConnection(t *testing.T) {
	f := newFixture(t)
	c := f.client(1, false)
	f.reg.Own(c.EP, "n", 1)
	if r := c.NextReply(conntest.Timeout); r.ID != 1 || pb.Code(r.Aux) != pb.Code_CODE_PEER_GONE {
		t.Fatalf("Own by a connection not added: reply %d %v, want CODE_PEER_GONE", r.ID, pb.Code(r.Aux))
	}
	if f.reg.NameCount() != 0 {
		t.Fatal("a name was given to a connection not added")
	}
}

func TestListings(t *testing.T) {
	f := newFixture(t)
	c2, c3, c1 := f.client(2, true), f.client(3, true), f.client(1, true)
	f.join(c1, "g2", 1)
	f.join(c1, "g1", 2)
	f.join(c3, "g1", 1)
	f.own(c2, "b", 3)
	f.own(c1, "a", 3)
	f.own(c1, "b", 4) // standby: not among c1's names
	f.own(c3, "b", 4)

	l, err := f.reg.List(conntest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id            uint64
		groups, names []string
	}
	want := []row{{1, []string{"g1", "g2"}, []string{"a"}}, {2, []string{}, []string{"b"}}, {3, []string{"g1"}, []string{}}}
	if len(l) != len(want) {
		t.Fatalf("List: %d entries, want %d", len(l), len(want))
	}
	for i, e := range l {
		w := want[i]
		if e.Conn.ID() != w.id || !slices.Equal(e.Groups, w.groups) || !slices.Equal(e.Names, w.names) || e.Since.IsZero() {
			t.Fatalf("List[%d] = conn %d groups %q names %q since %v, want conn %d groups %q names %q",
				i, e.Conn.ID(), e.Groups, e.Names, e.Since, w.id, w.groups, w.names)
		}
	}

	ns, err := f.reg.ListNames(conntest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []*pb.NameInfo{
		{Name: "a", Owner: c1.EP.Address()},
		{Name: "b", Owner: c2.EP.Address(), Standby: []string{c1.EP.Address(), c3.EP.Address()}},
	}
	if len(ns) != len(wantNames) {
		t.Fatalf("ListNames: %v", ns)
	}
	for i := range ns {
		if !gproto.Equal(ns[i], wantNames[i]) {
			t.Fatalf("ListNames[%d] = %v, want %v", i, ns[i], wantNames[i])
		}
	}

	// A standby that releases leaves the queue; the owner keeps the name.
	f.reg.Release(c1.EP, "b", 5)
	answered(t, c1, 5)
	ns, _ = f.reg.ListNames(conntest.Timeout)
	if len(ns) != 2 || ns[1].GetOwner() != c2.EP.Address() || !slices.Equal(ns[1].GetStandby(), []string{c3.EP.Address()}) {
		t.Fatalf("ListNames after a standby's Release: %v", ns)
	}
}
