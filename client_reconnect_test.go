package switchboard

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// restartable runs nodes, one at a time, on one socket: start starts the
// next; each is closed when the test ends, if not before.
func restartable(t *testing.T) (socket string, start func() *Node) {
	socket = filepath.Join(t.TempDir(), "node.sock")
	return socket, func() *Node {
		t.Helper()
		n, err := NewNode(WithSocket(socket))
		if err != nil {
			t.Fatal(err)
		}
		echoService(n)
		if err := n.Listen(); err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- n.Serve(context.Background()) }()
		t.Cleanup(func() {
			n.Close()
			<-served
		})
		return n
	}
}

var fastReconnect = WithReconnect(ReconnectPolicy{Min: time.Millisecond, Max: 20 * time.Millisecond})

func dialSocketT(t *testing.T, socket string, opts ...DialOption) *Conn {
	t.Helper()
	c, err := Dial(ctx5(t), append([]DialOption{WithSocket(socket)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nextOfKind returns the next event of kind, skipping others.
func nextOfKind(t *testing.T, c *Conn, kind EventKind) Event {
	t.Helper()
	for {
		if e := recv(t, c); e.Kind == kind {
			return e
		}
	}
}

// TestReconnectRestores: the node shuts down and another starts on the
// same socket; the Conn is told of the gap, fails calls fast meanwhile
// (and makes a waiting one once back), and comes back with its group and
// its name, as the events say and the new node confirms.
func TestReconnectRestores(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		socket, start := restartable(t)
		first := start()
		c := dialSocketT(t, socket, WithTransport(tr), fastReconnect)
		ctx := ctx5(t)
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Own(ctx, "svc"); err != nil {
			t.Fatal(err)
		}
		oldAddr := c.Address()
		first.Close()

		e := nextOfKind(t, c, EventDisconnected)
		if r := e.Reconnection(); r == nil || !errors.Is(r.Err, ErrNodeShutdown) || r.OldAddress != oldAddr {
			t.Fatalf("EventDisconnected carries %+v", r)
		}
		if _, err := c.Call(ctx, svcEcho, cmdEcho, []byte("x")); !errors.Is(err, ErrNodeGone) {
			t.Fatalf("a call during the gap: %v, want ErrNodeGone", err)
		}
		if err := c.Publish(ctx, "g", []byte("x")); !errors.Is(err, ErrNodeGone) {
			t.Fatalf("a publication during the gap: %v, want ErrNodeGone", err)
		}
		if c.Err() != nil {
			t.Fatalf("Err during a gap: %v, want nil", c.Err())
		}
		select {
		case <-c.Done():
			t.Fatal("Done closed by a gap")
		default:
		}

		waited := make(chan error, 1)
		go func() {
			reply, err := c.Call(WaitForReconnect(ctx), svcEcho, cmdEcho, []byte("later"))
			if err == nil && string(reply) != "later" {
				err = errors.New("wrong reply " + string(reply))
			}
			waited <- err
		}()
		time.Sleep(20 * time.Millisecond) // the call waits meanwhile
		start()

		e = nextOfKind(t, c, EventReconnected)
		r := e.Reconnection()
		if r == nil || !slices.Equal(r.Groups, []string{"g"}) || !slices.Equal(r.Names, []string{"svc"}) || len(r.Lost) != 0 || len(r.Failed) != 0 {
			t.Fatalf("EventReconnected carries %+v", r)
		}
		if r.OldAddress != oldAddr || r.NewAddress != c.Address() || r.NewAddress == oldAddr || r.Attempts < 1 {
			t.Fatalf("addresses and attempts: %+v (now %s)", r, c.Address())
		}
		if err := <-waited; err != nil {
			t.Fatalf("the waiting call: %v", err)
		}
		other := dialSocketT(t, socket, WithTransport(tr))
		names, err := other.Names(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(names, func(n NameInfo) bool { return n.Name == "svc" }); i < 0 || names[i].Owner != c.Address() {
			t.Fatalf("names on the new node: %+v, want svc owned by %s", names, c.Address())
		}
		if err := other.Publish(ctx, "g", []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if e := nextOfKind(t, c, EventGroup); string(e.Payload) != "hello" {
			t.Fatalf("group message %q", e.Payload)
		}
	})
}

// TestReconnectNameTaken: while the Conn is away, another client takes its
// name; the Conn comes back as standby, is told the claim was lost, and
// owns the name once the other lets it go.
func TestReconnectNameTaken(t *testing.T) {
	socket, start := restartable(t)
	first := start()
	c := dialSocketT(t, socket, WithReconnect(ReconnectPolicy{Min: 300 * time.Millisecond, Max: time.Second}))
	ctx := ctx5(t)
	if _, _, err := c.Own(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	first.Close()
	nextOfKind(t, c, EventDisconnected)
	start()
	thief := dialSocketT(t, socket) // before c's first redial, at least 240 ms after the gap began
	if primary, _, err := thief.Own(ctx, "svc"); err != nil || !primary {
		t.Fatalf("the other client's claim: %v %v", primary, err)
	}
	r := nextOfKind(t, c, EventReconnected).Reconnection()
	if !slices.Equal(r.Lost, []string{"svc"}) || len(r.Names) != 0 {
		t.Fatalf("EventReconnected carries %+v, want svc lost", r)
	}
	thief.Close()
	waitFor(t, func() bool {
		names, err := c.Names(ctx)
		return err == nil && slices.ContainsFunc(names, func(n NameInfo) bool { return n.Name == "svc" && n.Owner == c.Address() })
	})
}

// TestReconnectGivesUp: with MaxAttempts spent the Conn ends for good:
// Done, Err matching the gap's reason, the disconnect handler once.
func TestReconnectGivesUp(t *testing.T) {
	socket, start := restartable(t)
	first := start()
	ends := make(chan error, 2)
	c := dialSocketT(t, socket, WithReconnect(ReconnectPolicy{Min: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3}),
		WithDisconnectHandler(func(err error) { ends <- err }))
	first.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("never gave up")
	}
	if err := c.Err(); !errors.Is(err, ErrNodeShutdown) || !errors.Is(err, ErrNodeGone) || !contains(err.Error(), "gave up") {
		t.Fatalf("Err %v", err)
	}
	c.Close()
	if err := <-ends; !errors.Is(err, ErrNodeShutdown) {
		t.Fatalf("disconnect handler heard %v", err)
	}
	if len(ends) != 0 {
		t.Fatal("disconnect handler called twice")
	}
}

// TestReconnectCloseDuringGap: Close while the Conn redials returns at
// once, with its goroutines ended; Err is ErrClosed.
func TestReconnectCloseDuringGap(t *testing.T) {
	socket, start := restartable(t)
	first := start()
	c := dialSocketT(t, socket, fastReconnect, WithEventHandler(func(Event) {}))
	first.Close()
	time.Sleep(50 * time.Millisecond) // a few redials fail meanwhile
	began := time.Now()
	c.Close()
	if d := time.Since(began); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err %v", c.Err())
	}
}

// TestReconnectHandlerOrder: the event handler gets the gap's events in
// order with the others: a message, EventDisconnected, EventReconnected,
// a message.
func TestReconnectHandlerOrder(t *testing.T) {
	socket, start := restartable(t)
	first := start()
	kinds := make(chan EventKind, 8)
	c := dialSocketT(t, socket, fastReconnect, WithEventHandler(func(e Event) { kinds <- e.Kind }))
	ctx := ctx5(t)
	if err := c.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	p := dialSocketT(t, socket)
	if err := p.Publish(ctx, "g", []byte("1"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	got := []EventKind{<-kinds} // taken before the node goes: the node drops what it has not written
	first.Close()
	start()
	p = dialSocketT(t, socket)
	want := []EventKind{EventGroup, EventDisconnected, EventReconnected, EventGroup}
	for len(got) < len(want) {
		if len(got) == 3 {
			if err := p.Publish(ctx, "g", []byte("2"), WantAnswer()); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case k := <-kinds:
			got = append(got, k)
		case <-ctx.Done():
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// TestReconnectNameClient: a name client on a reconnecting Conn follows
// its name's owner across the restart (the owner reconnects too, with a
// new address), and in poll mode the gap's events make Fd readable.
func TestReconnectNameClient(t *testing.T) {
	socket, start := restartable(t)
	first := start()
	ctx := ctx5(t)
	owner := dialSocketT(t, socket, fastReconnect)
	if _, _, err := owner.Own(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	c := dialSocketT(t, socket, fastReconnect)
	fd := c.Fd()
	nc, err := NewNameClient(ctx, c, "svc", NameClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if e, err := nc.Next(ctx); err != nil || e.Kind != NameOwner || e.Owner != owner.Address() {
		t.Fatalf("first name event %+v %v", e, err)
	}
	oldOwner := owner.Address()
	first.Close()
	if !readable(t, fd, 5000) {
		t.Fatal("Fd not readable after the node went")
	}
	if e, ok := c.TryRecvEvent(); !ok || e.Kind != EventDisconnected {
		t.Fatalf("TryRecvEvent: %+v %v, want EventDisconnected", e, ok)
	}
	if readable(t, fd, 0) { // a gap is no end: a poll loop must not spin through it
		t.Fatal("Fd readable during the gap with no event waiting")
	}
	start()
	nextOfKind(t, owner, EventReconnected)
	if e := nextOfKind(t, c, EventReconnected); !slices.Contains(e.Reconnection().Groups, GroupNames) {
		t.Fatalf("the name client's group not restored: %+v", e.Reconnection())
	}
	want := []NameEvent{{Kind: NameOwnerGone, Owner: oldOwner}, {Kind: NameOwner, Owner: owner.Address()}}
	for _, w := range want {
		e, err := nc.Next(ctx)
		if err != nil || e.Kind != w.Kind || e.Owner != w.Owner {
			t.Fatalf("name event %+v %v, want %+v", e, err, w)
		}
	}
}
