package switchboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestBusDirect(t *testing.T) { bothTransports(t, testBusDirect) }

func testBusDirect(t *testing.T, tr Transport) {
	n := startNode(t)
	a := dial(t, n, WithTransport(tr))
	b := dial(t, n, WithTransport(tr))
	ctx := ctx5(t)
	if a.Address() == b.Address() || a.Address()[0] != ':' {
		t.Fatalf("addresses %q %q", a.Address(), b.Address())
	}
	if err := a.SendTo(ctx, b.Address(), []byte("hi"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	e := recv(t, b)
	if e.Kind != EventMessage || e.From != a.Address() || e.To != b.Address() || string(e.Payload) != "hi" {
		t.Fatalf("got %+v", e)
	}
	if err := a.SendTo(ctx, ":n1.999", []byte("x"), WantAnswer()); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("to nobody: %v", err)
	}
	if err := a.SendTo(ctx, ":n1.999", []byte("x")); err != nil {
		t.Fatalf("to nobody without want-answer: %v", err)
	}
	if _, err := a.Request(ctx, "no.such.name", nil); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("request to nobody: %v", err)
	}
	// A request without a handler arrives as an event and is answered with Reply.
	done := make(chan error, 1)
	go func() {
		r, err := a.Request(ctx, b.Address(), []byte("q"))
		if err == nil && string(r) != "a:q" {
			err = fmt.Errorf("reply %q", r)
		}
		done <- err
	}()
	e = recv(t, b)
	if e.Kind != EventRequest || string(e.Payload) != "q" {
		t.Fatalf("request event %+v", e)
	}
	if err := e.Reply([]byte("a:q"), nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBusGroups(t *testing.T) { bothTransports(t, testBusGroups) }

func testBusGroups(t *testing.T, tr Transport) {
	n := startNode(t)
	ctx := ctx5(t)
	pub := dial(t, n, WithTransport(tr))
	subs := []*Conn{dial(t, n, WithTransport(tr)), dial(t, n, WithTransport(tr)), dial(t, n, WithTransport(tr))}
	if err := pub.Publish(ctx, "g", []byte("nobody")); err != nil {
		t.Fatalf("publish to an empty group: %v", err)
	}
	if err := pub.Publish(ctx, "g", []byte("nobody"), WantAnswer()); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("want-answer publish to an empty group: %v", err)
	}
	for _, s := range subs {
		if err := s.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	ms, err := pub.Members(ctx, "g")
	if err != nil || len(ms) != 4 {
		t.Fatalf("members %+v %v", ms, err)
	}
	for i := range 100 {
		if err := pub.Publish(ctx, "g", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range subs {
		for i := range 100 {
			e := recv(t, s)
			if e.Kind != EventGroup || e.To != "g" || e.From != pub.Address() || string(e.Payload) != fmt.Sprint(i) {
				t.Fatalf("%d: %+v", i, e)
			}
		}
	}
	noEvent(t, pub) // not its own publication
	if err := pub.Publish(ctx, "g", []byte("echo"), Echo()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, pub); string(e.Payload) != "echo" {
		t.Fatalf("echo %+v", e)
	}
	// A group request: every other member answers, or does not.
	go func() {
		for i, s := range subs {
			e := recv(t, s)
			for e.Kind != EventRequest {
				e = recv(t, s) // the echo publication first
			}
			if i == 2 {
				s.Close()
				continue
			}
			e.Reply([]byte(fmt.Sprint("r", i)), nil)
		}
	}()
	rs, err := pub.RequestGroup(ctx, "g", []byte("q"))
	if err != nil || len(rs) != 3 {
		t.Fatalf("request group: %+v %v", rs, err)
	}
	for i, r := range rs {
		if r.Address != subs[i].Address() {
			t.Fatalf("result %d from %s, want %s", i, r.Address, subs[i].Address())
		}
		if i < 2 && (r.Err != nil || string(r.Payload) != fmt.Sprint("r", i)) || i == 2 && !errors.Is(r.Err, ErrPeerGone) {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	waitFor(t, func() bool { // the member that closed leaves once its actor is gone
		groups, err := pub.Groups(ctx)
		if err != nil || len(groups) != 1 {
			t.Fatalf("groups %+v %v", groups, err)
		}
		return groups[0].Members == 3
	})
}

func TestBusNotices(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	obs := dial(t, n)
	for _, g := range []string{GroupConnections, GroupGroups, GroupNames} {
		if err := obs.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	a := dial(t, n, WithClientName("a"))
	if err := a.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if p, _, err := a.Own(ctx, "svc"); err != nil || !p {
		t.Fatal(p, err)
	}
	b := dial(t, n, WithClientName("b"))
	if p, pos, err := b.Own(ctx, "svc"); err != nil || p || pos != 1 {
		t.Fatal(p, pos, err)
	}
	a.Close()
	got := notices(t, obs, 9)
	want := []string{
		"SUBSCRIBED " + obs.Address() + " " + GroupGroups, // its own, after it joined sys.groups
		"SUBSCRIBED " + obs.Address() + " " + GroupNames,
		"CONNECTED " + a.Address(),
		"SUBSCRIBED " + a.Address() + " g",
		"NAME_OWNER_CHANGED svc  -> " + a.Address(),
		"CONNECTED " + b.Address(),
		"UNSUBSCRIBED " + a.Address() + " g DISCONNECT_CLOSED",
		"NAME_OWNER_CHANGED svc " + a.Address() + " -> " + b.Address(),
		"DISCONNECTED " + a.Address() + " DISCONNECT_CLOSED",
	}
	for i, nt := range got {
		var s string
		switch nt.Kind {
		case NoticeConnected:
			s = "CONNECTED " + nt.Member.Address
		case NoticeDisconnected:
			s = "DISCONNECTED " + nt.Member.Address + " " + nt.Reason.String()
		case NoticeSubscribed:
			s = "SUBSCRIBED " + nt.Member.Address + " " + nt.Group
		case NoticeUnsubscribed:
			s = "UNSUBSCRIBED " + nt.Member.Address + " " + nt.Group + " " + nt.Reason.String()
		case NoticeNameOwnerChanged:
			s = "NAME_OWNER_CHANGED " + nt.Name + " " + nt.OldOwner + " -> " + nt.NewOwner
		}
		if s != want[i] {
			t.Errorf("notice %d: %q, want %q", i, s, want[i])
		}
	}
	// b learns it owns the name.
	e := recv(t, b)
	if nt, err := e.Notice(); err != nil || nt.Kind != NoticeNameAcquired || nt.Name != "svc" {
		t.Fatalf("b: %+v %v", nt, err)
	}
}

func TestBusSubscribeWithMembers(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	var cs []*Conn
	for range 3 {
		c := dial(t, n)
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	w := dial(t, n)
	ms, err := w.SubscribeWithMembers(ctx, "g")
	if err != nil || len(ms) != 4 || ms[3].Address != w.Address() {
		t.Fatalf("%+v %v", ms, err)
	}
	cs[1].Unsubscribe(ctx, "g")
	nt := notices(t, w, 1)[0]
	if nt.Kind != NoticeUnsubscribed || nt.Member.Address != cs[1].Address() {
		t.Fatalf("%+v", nt)
	}
	late := dial(t, n)
	late.Subscribe(ctx, "g")
	nt = notices(t, w, 1)[0]
	if nt.Kind != NoticeSubscribed || nt.Member.Address != late.Address() {
		t.Fatalf("%+v", nt)
	}
}

func TestBusPolicy(t *testing.T) {
	deny := map[Action]string{ActionPublish: "secret", ActionSubscribe: "secret", ActionOwn: "svc.root"} // and b's address
	var mu sync.Mutex
	n := startNode(t, WithPolicy(PolicyFunc(func(who Cred, what Action, target string) error {
		mu.Lock()
		defer mu.Unlock()
		if d, ok := deny[what]; ok && d == target || what == ActionList && target == "" && who.PID < 0 {
			return fmt.Errorf("policy: no %s to %q", what, target)
		}
		return nil
	})))
	ctx := ctx5(t)
	a := dial(t, n)
	b := dial(t, n)
	mu.Lock()
	deny[ActionSend] = b.Address()
	mu.Unlock()
	if _, _, err := b.Own(ctx, "alias"); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"send":         a.SendTo(ctx, b.Address(), nil, WantAnswer()),
		"send by name": a.SendTo(ctx, "alias", nil, WantAnswer()),
		"request":      func() error { _, err := a.Request(ctx, "alias", nil); return err }(),
		"publish":      a.Publish(ctx, "secret", nil, WantAnswer()),
		"group req":    func() error { _, err := a.RequestGroup(ctx, "secret", nil); return err }(),
		"subscribe":    a.Subscribe(ctx, "secret"),
		"own":          func() error { _, _, err := a.Own(ctx, "svc.root"); return err }(),
	} {
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	// Another policy at once.
	mu.Lock()
	deny = map[Action]string{}
	mu.Unlock()
	if err := a.SendTo(ctx, "alias", nil, WantAnswer()); err != nil {
		t.Fatal(err)
	}
}

func TestBusMonitor(t *testing.T) {
	n := startNode(t, WithPolicy(PolicyFunc(func(who Cred, what Action, target string) error {
		if what == ActionMonitor && who.PID == -1 { // nobody: the rule is exercised by tests/
			return errors.New("no")
		}
		return nil
	})))
	ctx := ctx5(t)
	mon := dial(t, n, WithEventQueue(1), WithRings(0, 0, 64<<10))
	a, b := dial(t, n), dial(t, n)
	other := dial(t, n)
	if err := mon.Monitor(ctx, b.Address(), "g"); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	a.SendTo(ctx, b.Address(), []byte("direct"), WantAnswer())
	a.SendTo(ctx, other.Address(), []byte("not watched"), WantAnswer())
	a.Publish(ctx, "g", []byte("pub"), WantAnswer())
	for _, want := range []struct {
		kind    EventKind
		to, msg string
	}{{EventMessage, b.Address(), "direct"}, {EventGroup, "g", "pub"}} {
		e := recv(t, mon)
		if e.Kind != EventMonitor || e.Monitored != want.kind || e.From != a.Address() || e.To != want.to || string(e.Payload) != want.msg {
			t.Fatalf("monitor got %+v, want %+v", e, want)
		}
	}
	noEvent(t, mon)
	recv(t, b) // "direct"
	recv(t, b) // "pub"
	// A monitor that stops reading loses copies and is told; the traffic
	// it watches is not held up.
	for i := range 15000 {
		if err := a.SendTo(ctx, b.Address(), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 15000 {
		e := recv(t, b)
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("b got %q, want %d", e.Payload, i)
		}
	}
	var got, dropped uint64
	for got+dropped < 15000 {
		e := recv(t, mon)
		got++
		dropped += e.Dropped
	}
	if dropped == 0 {
		t.Fatalf("a monitor that did not read lost nothing (got %d)", got)
	}
	t.Logf("monitor: %d copies, %d lost", got, dropped)
}

// TestBusSizes: a message at the sender's limit reaches a peer with the
// same limit (the bus's prefix does not push it over); a peer with a
// smaller limit is refused with ErrTooLarge (sent to, or published to a
// group of it alone), and keeps its connection; a group reply that would exceed the caller's limit gives way.
func TestBusSizes(t *testing.T) {
	n := startNode(t, WithMaxMessage(1<<20))
	ctx := ctx5(t)
	a, b := dial(t, n), dial(t, n)
	small := dial(t, n, WithMaxMessage(64<<10))
	big := make([]byte, a.MaxMessage()-1-len(b.Address()))
	if err := a.SendTo(ctx, b.Address(), big, WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, b); len(e.Payload) != len(big) {
		t.Fatalf("got %d bytes", len(e.Payload))
	}
	if err := a.SendTo(ctx, small.Address(), big[:100<<10], WantAnswer()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("to a smaller peer: %v", err)
	}
	// A publication only a member too small for it would get.
	if err := small.Subscribe(ctx, "smallonly"); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "smallonly", big[:100<<10], WantAnswer()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("publication to a group of one smaller member: %v", err)
	}
	if _, err := small.Call(ctx, SystemService, SysPing, nil); err != nil {
		t.Fatalf("the smaller peer lost its connection: %v", err)
	}
	answer := func(ctx context.Context, r *PeerRequest) ([]byte, error) { return make([]byte, 600<<10), nil }
	for range 2 {
		m := dial(t, n, WithRequestHandler(answer))
		if err := m.Subscribe(ctx, "big"); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := a.RequestGroup(ctx, "big", nil)
	if err != nil || len(rs) != 2 {
		t.Fatalf("%v %v", rs, err)
	}
	if !(rs[0].Err == nil) == !(rs[1].Err == nil) || !errors.Is(errors.Join(rs[0].Err, rs[1].Err), ErrTooLarge) {
		t.Fatalf("want one answer and one ErrTooLarge: %v / %v", rs[0].Err, rs[1].Err)
	}
	if _, err := a.Call(ctx, SystemService, SysPing, nil); err != nil {
		t.Fatalf("caller lost its connection: %v", err)
	}
}

// TestBusGroupReplyTooManyMembers: answers that cannot fit in the
// caller's maximum message, even cut short, fail the request with
// ErrTooLarge; the caller keeps its connection.
func TestBusGroupReplyTooManyMembers(t *testing.T) {
	n := startNode(t)
	ctx := ctx5(t)
	for range 12 {
		m := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return make([]byte, 64), nil }))
		if err := m.Subscribe(ctx, "many"); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, n, WithMaxMessage(256), WithRings(0, 1024, 0))
	if _, err := c.RequestGroup(ctx, "many", nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Call(ctx, SystemService, SysPing, nil); err != nil {
		t.Fatalf("the caller lost its connection: %v", err)
	}
}

// TestMaxMessageOnEveryPath: a payload of exactly MaxMessage() is
// sendable on every path, chunked or not: the destination and the reply
// handle are the protocol's, not charged to the user; one byte more is
// ErrTooLarge before anything is sent.
func TestMaxMessageOnEveryPath(t *testing.T) {
	for _, rings := range []int{1 << 20, 16 << 10} { // one frame; chunks
		t.Run(fmt.Sprint("rings=", rings), func(t *testing.T) {
			n := startNode(t, WithMaxMessage(64<<10), WithRings(rings, rings, rings))
			echoService(n)
			ctx := ctx5(t)
			a := dial(t, n)
			max := a.MaxMessage()
			full, over := bytes.Repeat([]byte{7}, max), make([]byte, max+1)
			b := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
				if len(r.Payload) != max {
					return nil, fmt.Errorf("request of %d bytes", len(r.Payload))
				}
				return full, nil // a reply of the maximum too
			}))
			if _, _, err := b.Own(ctx, "b.name"); err != nil {
				t.Fatal(err)
			}
			c := dial(t, n)
			if err := c.Subscribe(ctx, "g"); err != nil {
				t.Fatal(err)
			}
			if got, err := a.Call(ctx, svcEcho, 1, full); err != nil || len(got) != max {
				t.Fatalf("Call: %d bytes, %v", len(got), err)
			}
			if err := a.SendTo(ctx, c.Address(), full, WantAnswer()); err != nil {
				t.Fatalf("SendTo: %v", err)
			}
			if e := recv(t, c); len(e.Payload) != max {
				t.Fatalf("SendTo delivered %d bytes", len(e.Payload))
			}
			if err := a.Publish(ctx, "g", full, WantAnswer()); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if e := recv(t, c); len(e.Payload) != max {
				t.Fatalf("Publish delivered %d bytes", len(e.Payload))
			}
			if got, err := a.Request(ctx, "b.name", full); err != nil || len(got) != max {
				t.Fatalf("Request: %d bytes, %v", len(got), err)
			}
			for name, send := range map[string]func() error{
				"Call":    func() error { _, err := a.Call(ctx, svcEcho, 1, over); return err },
				"SendTo":  func() error { return a.SendTo(ctx, c.Address(), over) },
				"Publish": func() error { return a.Publish(ctx, "g", over) },
				"Request": func() error { _, err := a.Request(ctx, "b.name", over); return err },
			} {
				if err := send(); !errors.Is(err, ErrTooLarge) {
					t.Errorf("%s of MaxMessage()+1: %v, want ErrTooLarge", name, err)
				}
			}
			if _, err := a.Call(ctx, SystemService, SysPing, nil); err != nil {
				t.Fatalf("the sender lost its connection: %v", err)
			}
		})
	}
}
