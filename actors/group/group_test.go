package group_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/conn/conntest"
	"github.com/switchboard-ipc/switchboard/actors/group"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

type fixture struct {
	t       *testing.T
	sys     *actor.ActorSystem
	sp      *conntest.Spawner
	dir     *group.Dir
	changes chan *group.Change
}

// newFixture returns a directory whose announcer records every change and
// calls its Done at once, unless hold (the test then calls Done).
func newFixture(t *testing.T, hold bool) *fixture {
	f := &fixture{t: t, sys: conntest.NewSystem(t), changes: make(chan *group.Change, 100)}
	f.sp = conntest.NewSpawner(t, f.sys)
	announcer := f.sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if ch, ok := ac.Message().(*group.Change); ok {
			f.changes <- ch
			if ch.Done != nil && !hold {
				ch.Done()
			}
		}
	}))
	t.Cleanup(func() { f.sys.Root.Stop(announcer) })
	f.dir = group.NewDir(group.Config{System: f.sys, Spawner: f.sp, Announcer: announcer})
	return f
}

func (f *fixture) client(id uint64) *conntest.Client {
	return conntest.Start(f.t, f.sys, f.sp, conn.Config{ID: id})
}

// change returns the next change the announcer saw and checks it.
func (f *fixture) change(g string, c *conntest.Client, joined, lost bool) *group.Change {
	f.t.Helper()
	select {
	case ch := <-f.changes:
		if ch.Group != g || ch.Conn != c.EP || ch.Joined != joined || ch.Lost != lost {
			f.t.Fatalf("change %s conn %d joined=%v lost=%v, want %s conn %d joined=%v lost=%v",
				ch.Group, ch.Conn.ID(), ch.Joined, ch.Lost, g, c.EP.ID(), joined, lost)
		}
		return ch
	case <-time.After(conntest.Timeout):
		f.t.Fatalf("no change announced for %s conn %d", g, c.EP.ID())
		return nil
	}
}

// reply reads the next reply of c and checks that it answers call id.
func reply(t *testing.T, c *conntest.Client, id uint64) conntest.Frame {
	t.Helper()
	r := c.NextReply(conntest.Timeout)
	if r.ID != id || pb.Code(r.Aux) != pb.Code_CODE_OK {
		t.Fatalf("conn %d: reply to %d (%v), want a CODE_OK reply to %d", c.EP.ID(), r.ID, pb.Code(r.Aux), id)
	}
	return r
}

func ids(cs []*conn.Endpoint) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.ID())
	}
	return out
}

func addresses(l *pb.MemberList) []string {
	var out []string
	for _, m := range l.GetMembers() {
		out = append(out, m.GetAddress())
	}
	return out
}

func TestJoinAnswersAfterTheAnnouncement(t *testing.T) {
	f := newFixture(t, true)
	c := f.client(1)
	if err := f.dir.Join("g", c.EP, 41, false); err != nil {
		t.Fatal(err)
	}
	ch := f.change("g", c, true, false)
	if got := ids(f.dir.Members("g")); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("Members at the announcement: %v", got)
	}
	c.NoReply(20 * time.Millisecond) // not answered before the announcer is done
	ch.Done()
	if r := reply(t, c, 41); len(r.Body) != 0 {
		t.Fatalf("plain join answered %d bytes", len(r.Body))
	}
}

func TestJoinListsMembersByID(t *testing.T) {
	f := newFixture(t, false)
	c1, c2, c3 := f.client(1), f.client(2), f.client(3)
	order := []*conntest.Client{c3, c1, c2}
	for i, c := range order {
		if err := f.dir.Join("g", c.EP, uint64(10+i), false); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range order {
		f.change("g", c, true, false) // in the order of the joins
		reply(t, c, uint64(10+i))
	}
	if ms, h := f.dir.Lookup("g"); h == nil || !slices.Equal(ids(ms), []uint64{1, 2, 3}) {
		t.Fatalf("Lookup: %v, handle %v; want members 1 2 3", ids(ms), h)
	}
	if got := ids(f.dir.Members("g")); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("Members: %v, want 1 2 3", got)
	}
	if got := f.dir.List(); !slices.Equal(got, []group.Info{{Name: "g", Members: 3}}) {
		t.Fatalf("List: %+v", got)
	}
	if ms, h := f.dir.Lookup("other"); ms != nil || h != nil {
		t.Fatalf("Lookup of an unknown group: %v %v", ms, h)
	}
	// Joining again changes nothing and announces nothing, but answers.
	f.dir.Join("g", c2.EP, 20, false)
	reply(t, c2, 20)
	select {
	case ch := <-f.changes:
		t.Fatalf("a second join announced %+v", ch)
	default:
	}
}

func TestWatcherGetsOthersChanges(t *testing.T) {
	f := newFixture(t, false)
	c1, c2, c3 := f.client(1), f.client(2), f.client(3)
	f.dir.Join("g", c1.EP, 1, false)
	reply(t, c1, 1)
	f.dir.Join("g", c2.EP, 2, true)
	var list pb.MemberList
	if err := gproto.Unmarshal(reply(t, c2, 2).Body, &list); err != nil {
		t.Fatal(err)
	}
	if got := addresses(&list); !slices.Equal(got, []string{c1.EP.Address(), c2.EP.Address()}) {
		t.Fatalf("MemberList %v, want the member and the caller", got)
	}
	if m := list.GetMembers()[1]; !gproto.Equal(m, c2.EP.Member()) {
		t.Fatalf("the caller listed as %v, want %v", m, c2.EP.Member())
	}
	c2.NoEvent(20 * time.Millisecond) // nothing about its own join

	f.dir.Join("g", c3.EP, 3, false)
	reply(t, c3, 3)
	n, to := c2.NextNotice(conntest.Timeout)
	if n.GetKind() != pb.NoticeKind_NOTICE_SUBSCRIBED || n.GetGroup() != "g" || to != "g" || n.GetMember().GetAddress() != c3.EP.Address() {
		t.Fatalf("watcher got %v (to %q), want c3 subscribed to g", n, to)
	}
	f.dir.Leave("g", c3.EP, 4)
	reply(t, c3, 4)
	n, _ = c2.NextNotice(conntest.Timeout)
	if n.GetKind() != pb.NoticeKind_NOTICE_UNSUBSCRIBED || n.GetMember().GetAddress() != c3.EP.Address() || n.GetReason() != pb.DisconnectReason_DISCONNECT_UNSPECIFIED {
		t.Fatalf("watcher got %v, want c3 unsubscribed", n)
	}
	// Nothing goes to the member that did not ask, nor to the watcher about itself.
	f.dir.Leave("g", c2.EP, 5)
	reply(t, c2, 5)
	c1.NoEvent(20 * time.Millisecond)
	c2.NoEvent(0)
}

// TestMemberListInIDOrder: a caller whose id is lower than a member's is
// listed in its place, not last.
func TestMemberListInIDOrder(t *testing.T) {
	f := newFixture(t, false)
	c1, c2, c3 := f.client(1), f.client(2), f.client(3)
	for i, c := range []*conntest.Client{c3, c1} {
		f.dir.Join("g", c.EP, uint64(i+1), false)
		reply(t, c, uint64(i+1))
	}
	f.dir.Join("g", c2.EP, 9, true)
	var list pb.MemberList
	if err := gproto.Unmarshal(reply(t, c2, 9).Body, &list); err != nil {
		t.Fatal(err)
	}
	if got, want := addresses(&list), []string{c1.EP.Address(), c2.EP.Address(), c3.EP.Address()}; !slices.Equal(got, want) {
		t.Fatalf("MemberList %v, want %v", got, want)
	}
}

func TestLeave(t *testing.T) {
	f := newFixture(t, false)
	c1, c2 := f.client(1), f.client(2)
	f.dir.Join("g", c1.EP, 1, false)
	reply(t, c1, 1)
	f.dir.Join("g", c2.EP, 1, false)
	reply(t, c2, 1)
	f.change("g", c1, true, false)
	f.change("g", c2, true, false)

	f.dir.Leave("g", c1.EP, 2)
	reply(t, c1, 2)
	f.change("g", c1, false, false)
	if got := ids(f.dir.Members("g")); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("Members after a leave: %v", got)
	}
	f.dir.Leave("g", c1.EP, 3) // not a member: answered, nothing announced
	reply(t, c1, 3)
	f.dir.Leave("nowhere", c1.EP, 4) // no such group: answered
	reply(t, c1, 4)

	f.dir.Leave("g", c2.EP, 5)
	reply(t, c2, 5)
	f.change("g", c2, false, false)
	f.sp.WaitStopped(t, "group-1") // the empty group's actor stops
	if ms, h := f.dir.Lookup("g"); ms != nil || h != nil || len(f.dir.List()) != 0 {
		t.Fatalf("empty group still listed: %v %v %v", ms, h, f.dir.List())
	}
	select {
	case ch := <-f.changes:
		t.Fatalf("unexpected change %+v", ch)
	default:
	}
}

func TestMemberWhoseConnectionEndsIsDropped(t *testing.T) {
	f := newFixture(t, false)
	c1, c2 := f.client(1), f.client(2)
	f.dir.Join("g", c1.EP, 1, false)
	reply(t, c1, 1)
	f.dir.Join("g", c2.EP, 1, true)
	reply(t, c2, 1)
	f.change("g", c1, true, false)
	f.change("g", c2, true, false)

	c1.Close()
	f.change("g", c1, false, true)
	if got := ids(f.dir.Members("g")); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("Members after a member was lost: %v", got)
	}
	n, _ := c2.NextNotice(conntest.Timeout)
	if n.GetKind() != pb.NoticeKind_NOTICE_UNSUBSCRIBED || n.GetMember().GetAddress() != c1.EP.Address() ||
		n.GetReason() != pb.DisconnectReason_DISCONNECT_LOST || n.GetDetail() != "disconnected" {
		t.Fatalf("watcher got %v, want c1 unsubscribed, lost", n)
	}
	if got := f.dir.List(); !slices.Equal(got, []group.Info{{Name: "g", Members: 1}}) {
		t.Fatalf("List: %+v", got)
	}

	c2.Close()
	f.change("g", c2, false, true)
	f.sp.WaitStopped(t, "group-1")
	if ms, h := f.dir.Lookup("g"); ms != nil || h != nil || len(f.dir.List()) != 0 || f.dir.Handle("g") != nil {
		t.Fatalf("group of lost members still there: %v %v %v", ms, h, f.dir.List())
	}
}

func TestConcurrentJoinsCreateOneGroup(t *testing.T) {
	f := newFixture(t, false)
	const groups = 10
	c1, c2 := f.client(1), f.client(2)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range []*conntest.Client{c1, c2} {
		wg.Go(func() {
			<-start
			for i := range groups {
				if err := f.dir.Join(fmt.Sprint("g", i), c.EP, uint64(i+1), false); err != nil {
					t.Error(err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for _, c := range []*conntest.Client{c1, c2} {
		got := map[uint64]bool{}
		for range groups {
			got[c.NextReply(conntest.Timeout).ID] = true
		}
		if len(got) != groups {
			t.Fatalf("conn %d: answers to %d distinct joins, want %d", c.EP.ID(), len(got), groups)
		}
	}
	list := f.dir.List()
	if len(list) != groups {
		t.Fatalf("List: %+v, want %d groups", list, groups)
	}
	for i, g := range list {
		if g.Members != 2 || !slices.Equal(ids(f.dir.Members(g.Name)), []uint64{1, 2}) {
			t.Fatalf("group %d: %+v, members %v; want both connections in one group", i, g, ids(f.dir.Members(g.Name)))
		}
	}
	for range 2 * groups {
		select {
		case ch := <-f.changes:
			if !ch.Joined {
				t.Fatalf("unexpected change %+v", ch)
			}
		case <-time.After(conntest.Timeout):
			t.Fatal("fewer changes than joins")
		}
	}
}
