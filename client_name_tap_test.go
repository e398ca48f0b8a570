package switchboard

import (
	"context"
	"slices"
	"testing"
	"time"
)

// isMember reports whether c is a member of group, as the node says.
func isMember(t *testing.T, c *Conn, group string) bool {
	t.Helper()
	ms, err := c.Members(ctx5(t), group)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ms, func(m Member) bool { return m.Address == c.Address() })
}

// noNameEvent fails if nc gets an event within 50ms.
func noNameEvent(t *testing.T, nc *NameClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if e, err := nc.Next(ctx); err == nil {
		t.Fatalf("%s: unexpected name event %+v", nc.Name(), e)
	}
}

// TestNameClientTapConnJoinsLater: a group a name client joined becomes
// shared when the Conn subscribes to it afterwards (its messages and
// notices reach both), stops being the Conn's on Unsubscribe while the
// name client keeps it, and the name client's Close keeps the
// subscriptions the Conn made itself.
func TestNameClientTapConnJoinsLater(t *testing.T) {
	bothTransports(t, testNameClientTapConnJoinsLater)
}

func testNameClientTapConnJoinsLater(t *testing.T, tr Transport) {
	n := startNode(t)
	ctx := ctx5(t)
	c := dial(t, n, WithTransport(tr))
	p := dial(t, n)
	nc, err := NewNameClient(ctx, c, "svc.late", NameClientOptions{Notifications: "late"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := p.Publish(ctx, "late", []byte("before"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := nextName(t, nc); string(e.Payload) != "before" {
		t.Fatalf("name client: %+v", e)
	}
	noEvent(t, c) // not the Conn's yet

	for _, g := range []string{"late", GroupNames} {
		if err := c.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Publish(ctx, "late", []byte("shared"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, c); e.Kind != EventGroup || string(e.Payload) != "shared" {
		t.Fatalf("Conn: %+v, want the publication", e)
	}
	if e := nextName(t, nc); string(e.Payload) != "shared" {
		t.Fatalf("name client: %+v", e)
	}
	for _, name := range []string{"svc.other", "svc.late"} {
		if _, _, err := p.Own(ctx, name); err != nil {
			t.Fatal(err)
		}
		nt := notices(t, c, 1)[0]
		if nt.Kind != NoticeNameOwnerChanged || nt.Name != name {
			t.Fatalf("Conn: notice %+v, want %s's owner", nt, name)
		}
	}
	wantOwnerEvent(t, nextName(t, nc), NameOwner, p.Address())

	// Unsubscribe: the name client keeps the group, the Conn gets no more of it.
	if err := c.Unsubscribe(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	if !isMember(t, c, "late") {
		t.Fatal("Unsubscribe left a group the name client uses")
	}
	if err := p.Publish(ctx, "late", []byte("theirs"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := nextName(t, nc); string(e.Payload) != "theirs" {
		t.Fatalf("name client: %+v", e)
	}
	noEvent(t, c)

	// Close leaves "late" (the name client's alone now) but not sys.names
	// (the Conn's own since its Subscribe), which keeps reaching it.
	nc.Close()
	if isMember(t, c, "late") {
		t.Fatal("still a member of the name client's group after Close")
	}
	if !isMember(t, c, GroupNames) {
		t.Fatal("the name client's Close left the Conn's own subscription to sys.names")
	}
	if err := p.Disown(ctx, "svc.other"); err != nil {
		t.Fatal(err)
	}
	if nt := notices(t, c, 1)[0]; nt.Kind != NoticeNameOwnerChanged || nt.Name != "svc.other" {
		t.Fatalf("Conn after Close: %+v", nt)
	}
}

// TestNameClientTapForgetsGroups: the groups the name clients left are
// forgotten (none stays in the tap set for good), and a group the Conn
// subscribes to after its name client left it reaches the Conn, whether
// the tap had forgotten it yet or not.
func TestNameClientTapForgetsGroups(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	c := dial(t, n)
	p := dial(t, n)
	for i, g := range []string{"at.once", "later"} {
		nc, err := NewNameClient(ctx, c, "svc.forget", NameClientOptions{Notifications: g})
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
		if i == 1 {
			waitFor(t, func() bool { return len(c.taps.set.Load().groups) == 0 })
		}
		if err := c.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, g, []byte(g), WantAnswer()); err != nil {
			t.Fatal(err)
		}
		if e := recv(t, c); e.Kind != EventGroup || string(e.Payload) != g {
			t.Fatalf("Conn: %+v, want the publication to %s", e, g)
		}
	}
	waitFor(t, func() bool { return len(c.taps.set.Load().groups) == 0 })

	// Many name clients on groups of their own, come and gone: nothing stays.
	for i := range 20 {
		nc, err := NewNameClient(ctx, c, "svc.forget", NameClientOptions{Notifications: "g" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	waitFor(t, func() bool { return len(c.taps.set.Load().groups) == 0 })
	if isMember(t, c, GroupNames) || isMember(t, c, "ga") {
		t.Fatal("still a member of the name clients' groups")
	}
}

// TestNameClientTapNoticesByName: each name client gets the sys.names
// notices about its own name only; a Conn subscribed to sys.names itself
// gets all of them, those about the followed names included, and one
// that is not gets none.
func TestNameClientTapNoticesByName(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	p := dial(t, n)
	for _, own := range []bool{true, false} {
		c := dial(t, n)
		if own {
			if err := c.Subscribe(ctx, GroupNames); err != nil {
				t.Fatal(err)
			}
		}
		var ncs []*NameClient
		for _, name := range []string{"svc.one", "svc.two"} {
			nc, err := NewNameClient(ctx, c, name, NameClientOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ncs = append(ncs, nc)
		}
		names := []string{"svc.one", "svc.three", "svc.two"}
		for _, name := range names {
			if _, _, err := p.Own(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		wantOwnerEvent(t, nextName(t, ncs[0]), NameOwner, p.Address())
		wantOwnerEvent(t, nextName(t, ncs[1]), NameOwner, p.Address())
		if own {
			for i, nt := range notices(t, c, 3) {
				if nt.Kind != NoticeNameOwnerChanged || nt.Name != names[i] {
					t.Fatalf("Conn: notice %+v, want %s's", nt, names[i])
				}
			}
		}
		noEvent(t, c)
		for _, name := range names {
			if err := p.Disown(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		wantOwnerEvent(t, nextName(t, ncs[0]), NameOwnerGone, p.Address())
		wantOwnerEvent(t, nextName(t, ncs[1]), NameOwnerGone, p.Address())
		noNameEvent(t, ncs[0])
		noNameEvent(t, ncs[1])
		if own {
			notices(t, c, 3)
		}
		noEvent(t, c)
	}
}
