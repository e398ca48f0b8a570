package switchboard

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// nameOwner dials a client that answers requests with "ADDRESS:payload"
// and claims name (as owner or standby).
func nameOwner(t *testing.T, n *Node, name string, opts ...DialOption) *Conn {
	t.Helper()
	var c *Conn
	ready := make(chan struct{})
	c = dial(t, n, append(opts, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		<-ready
		return append([]byte(c.Address()+":"), r.Payload...), nil
	}))...)
	close(ready)
	if _, _, err := c.Own(ctx5(t), name); err != nil {
		t.Fatal(err)
	}
	return c
}

func nextName(t *testing.T, nc *NameClient) NameEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := nc.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return e
}

func wantOwnerEvent(t *testing.T, e NameEvent, kind NameEventKind, owner string) {
	t.Helper()
	if e.Kind != kind || e.Owner != owner {
		t.Fatalf("event %+v, want kind %d owner %s", e, kind, owner)
	}
}

// TestNameClientFollowsOwner: the name client sees the owner, requests
// reach it, and a handover to the standby is seen as the owner gone then
// the new one; with no owner requests are undeliverable.
func TestNameClientFollowsOwner(t *testing.T) { bothTransports(t, testNameClientFollowsOwner) }

func testNameClientFollowsOwner(t *testing.T, tr Transport) {
	n := startNode(t)
	ctx := ctx5(t)
	a := nameOwner(t, n, "svc.x", WithTransport(tr))
	b := nameOwner(t, n, "svc.x", WithTransport(tr))
	c := dial(t, n, WithTransport(tr))
	nc, err := NewNameClient(ctx, c, "svc.x", NameClientOptions{Notifications: "svc.x.events"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wantOwnerEvent(t, nextName(t, nc), NameOwner, a.Address())
	if nc.Owner() != a.Address() {
		t.Fatalf("Owner %q", nc.Owner())
	}
	if r, err := nc.Request(ctx, []byte("hi")); err != nil || string(r) != a.Address()+":hi" {
		t.Fatalf("request: %q %v", r, err)
	}
	if err := a.Publish(ctx, "svc.x.events", []byte("news"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := nextName(t, nc); e.Kind != NameNotification || e.From != a.Address() || string(e.Payload) != "news" {
		t.Fatalf("notification %+v", e)
	}
	a.Close()
	wantOwnerEvent(t, nextName(t, nc), NameOwnerGone, a.Address())
	wantOwnerEvent(t, nextName(t, nc), NameOwner, b.Address())
	done := make(chan *AsyncCall, 1)
	nc.Go(ctx, []byte("async"), done)
	if ac := <-done; ac.Err != nil || string(ac.Reply) != b.Address()+":async" {
		t.Fatalf("Go: %q %v", ac.Reply, ac.Err)
	}
	if err := b.Disown(ctx, "svc.x"); err != nil {
		t.Fatal(err)
	}
	wantOwnerEvent(t, nextName(t, nc), NameOwnerGone, b.Address())
	if _, err := nc.Request(ctx, []byte("anyone?")); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("request without owner: %v", err)
	}
}

// TestNameClientModes: the same owner change and notification reach a
// name client with callbacks, one polled through its Fd, and one read
// with Next.
func TestNameClientModes(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	c := dial(t, n)

	var mu sync.Mutex
	var got []string
	cb, err := NewNameClient(ctx, c, "svc.m", NameClientOptions{Notifications: "svc.m.events",
		OnOwner:        func(addr string) { mu.Lock(); got = append(got, "owner "+addr); mu.Unlock() },
		OnOwnerGone:    func(old string) { mu.Lock(); got = append(got, "gone "+old); mu.Unlock() },
		OnNotification: func(e NameEvent) { mu.Lock(); got = append(got, "note "+string(e.Payload)); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	poll, err := NewNameClient(ctx, c, "svc.m", NameClientOptions{Notifications: "svc.m.events"})
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	c2 := dial(t, n)
	sync2, err := NewNameClient(ctx, c2, "svc.m", NameClientOptions{Notifications: "svc.m.events"})
	if err != nil {
		t.Fatal(err)
	}
	defer sync2.Close()
	if readable(t, poll.Fd(), 0) {
		t.Fatal("Fd readable with no owner and no notification")
	}

	a := nameOwner(t, n, "svc.m")
	if err := a.Publish(ctx, "svc.m.events", []byte("n1")); err != nil {
		t.Fatal(err)
	}
	want := []string{"owner " + a.Address(), "note n1"}

	var polled []string
	for len(polled) < 2 {
		if !readable(t, poll.Fd(), 5000) {
			t.Fatalf("Fd not readable; have %q", polled)
		}
		for e, ok := poll.TryNext(); ok; e, ok = poll.TryNext() {
			if e.Kind == NameNotification {
				polled = append(polled, "note "+string(e.Payload))
			} else {
				polled = append(polled, "owner "+e.Owner)
			}
		}
	}
	if readable(t, poll.Fd(), 0) {
		t.Fatal("Fd readable with nothing waiting")
	}
	var synced []string
	wantOwnerEvent(t, nextName(t, sync2), NameOwner, a.Address())
	synced = append(synced, "owner "+a.Address())
	synced = append(synced, "note "+string(nextName(t, sync2).Payload))
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	for name, l := range map[string][]string{"callbacks": got, "poll": polled, "sync": synced} {
		if len(l) != 2 || l[0] != want[0] || l[1] != want[1] {
			t.Errorf("%s: %q, want %q", name, l, want)
		}
	}
	if _, err := cb.Next(ctx); err == nil {
		t.Error("Next on a name client with callbacks")
	}
}

// TestNameClientSharesEvents: a Conn's own events keep flowing beside its
// name client; a group the Conn had joined itself is shared, one it had
// not is the name client's alone; sys.names notices about other names do
// not reach the Conn's events, before Close or after it.
func TestNameClientSharesEvents(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	c := dial(t, n)
	p := dial(t, n)
	if err := c.Subscribe(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	n1, err := NewNameClient(ctx, c, "svc.one", NameClientOptions{Notifications: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := NewNameClient(ctx, c, "svc.two", NameClientOptions{Notifications: "theirs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"shared", "theirs", "mine"} {
		if err := p.Publish(ctx, g, []byte(g), WantAnswer()); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := p.Own(ctx, "svc.other"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"shared", "mine"} {
		if e := recv(t, c); e.Kind != EventGroup || string(e.Payload) != want {
			t.Fatalf("Conn's event %+v, want %s", e, want)
		}
	}
	noEvent(t, c)
	if e := nextName(t, n1); string(e.Payload) != "shared" {
		t.Fatalf("n1: %+v", e)
	}
	if e := nextName(t, n2); string(e.Payload) != "theirs" {
		t.Fatalf("n2: %+v", e)
	}
	n1.Close()
	n1.Close() // idempotent
	if _, err := n1.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if _, _, err := p.Own(ctx, "svc.two"); err != nil {
		t.Fatal(err)
	}
	wantOwnerEvent(t, nextName(t, n2), NameOwner, p.Address())
	n2.Close()
	if err := p.Disown(ctx, "svc.other"); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "shared", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, c); string(e.Payload) != "after" { // no sys.names notice before it
		t.Fatalf("after Close: %+v", e)
	}
	ms, err := c.Members(ctx, GroupNames)
	if err != nil || len(ms) != 0 {
		t.Fatalf("sys.names members after the last Close: %v %v", ms, err)
	}
}

// TestNameClientConnEnds: when its Conn ends, the name client tells the
// owner gone, then Next returns the Conn's error and Fd stays readable.
func TestNameClientConnEnds(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	a := nameOwner(t, n, "svc.e")
	c := dial(t, n)
	nc, err := NewNameClient(ctx, c, "svc.e", NameClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wantOwnerEvent(t, nextName(t, nc), NameOwner, a.Address())
	c.Close()
	wantOwnerEvent(t, nextName(t, nc), NameOwnerGone, a.Address())
	if _, err := nc.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after the Conn's end: %v", err)
	}
	if !readable(t, nc.Fd(), 1000) {
		t.Fatal("Fd not readable after the end")
	}
	if _, ok := nc.TryNext(); ok || !errors.Is(nc.Err(), ErrClosed) {
		t.Fatalf("TryNext after the end: %v, Err %v", ok, nc.Err())
	}
}
