package switchboard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// within waits for a value on ch, failing the test after 5 s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s after 5 s", what)
		panic("unreachable")
	}
}

// lateReplies is how many answers the node dropped from c because their
// callers had stopped waiting.
func lateReplies(n *Node, c *Conn) uint64 {
	return n.reg.Lookup(c.ID()).Stats().LateReplies.Load()
}

// blocker is a request handler that reports each request's context when
// its handler starts, and the context's cause when it ends; it returns
// only then.
type blocker struct {
	started chan context.Context
	ended   chan error
}

func newBlocker() *blocker {
	return &blocker{started: make(chan context.Context, 16), ended: make(chan error, 16)}
}

func (b *blocker) handle(ctx context.Context, r *PeerRequest) ([]byte, error) {
	b.started <- ctx
	<-ctx.Done()
	b.ended <- context.Cause(ctx)
	return []byte("late"), nil
}

// TestPeerRequestDeadline: the handler's context carries the caller's
// deadline, whichever way it serves: a handler, inline, an actor, or a
// group's members.
func TestPeerRequestDeadline(t *testing.T) { bothTransports(t, testPeerRequestDeadline) }

func testPeerRequestDeadline(t *testing.T, tr Transport) {
	n := startNode(t)
	deadlines := make(chan time.Time, 8)
	record := func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("no deadline")
		}
		if r.Context() != ctx && !r.c.o.inline {
			return nil, errors.New("ctx is not the request's context")
		}
		deadlines <- dl
		return nil, nil
	}
	handler := dial(t, n, WithTransport(tr), WithRequestHandler(record), WithRequestConcurrency(4))
	inline := dial(t, n, WithTransport(tr), WithRequestHandler(record), WithInlineRequests())
	sys := quietActorSystem()
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if r, ok := ac.Message().(*PeerRequest); ok {
			_, err := record(r.Context(), r)
			r.Respond(nil, err)
		}
	}))
	byActor := dial(t, n, WithTransport(tr), WithRequestActor(sys, pid))
	c := dial(t, n, WithTransport(tr))
	check := func(what string, sent, want time.Time) {
		t.Helper()
		got := within(t, deadlines, what+"'s deadline")
		// The node passes on what was left when it routed the request,
		// and the recipient counts it from when it read it: never early,
		// late by the request's trip at most.
		if got.Before(want.Add(-time.Millisecond)) || got.After(want.Add(time.Since(sent))) {
			t.Errorf("%s: deadline %v, want %v (+%v at most)", what, got.Sub(sent), want.Sub(sent), time.Since(sent))
		}
	}
	for _, srv := range []*Conn{handler, inline, byActor} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		sent := time.Now()
		want, _ := ctx.Deadline()
		if _, err := c.Request(ctx, srv.Address(), nil); err != nil {
			t.Fatal(err)
		}
		cancel()
		check(fmt.Sprintf("request to %s", srv.Address()), sent, want)
	}
	for _, m := range []*Conn{handler, byActor} {
		if err := m.Subscribe(ctx5(t), "g"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	sent := time.Now()
	want, _ := ctx.Deadline()
	res, err := c.RequestGroup(ctx, "g", nil)
	if err != nil || len(res) != 2 || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("group: %+v %v", res, err)
	}
	check("group member", sent, want)
	check("group member", sent, want)

	// Without a deadline, none.
	if _, err := c.Request(context.Background(), handler.Address(), nil); err == nil || !contains(err.Error(), "no deadline") {
		t.Fatalf("request without a deadline: %v", err)
	}
}

// TestPeerRequestCancel: when the caller gives up, the handler's context
// is cancelled at once, and its answer is dropped and counted as late.
func TestPeerRequestCancel(t *testing.T) { bothTransports(t, testPeerRequestCancel) }

func testPeerRequestCancel(t *testing.T, tr Transport) {
	n := startNode(t)
	b := newBlocker()
	srv := dial(t, n, WithTransport(tr), WithRequestHandler(b.handle))
	c := dial(t, n, WithTransport(tr))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, srv.Address(), nil)
		done <- err
	}()
	hctx := within(t, b.started, "handler start")
	if hctx.Err() != nil {
		t.Fatalf("context done before the caller gave up: %v", hctx.Err())
	}
	cancel()
	if err := within(t, done, "caller's return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("caller: %v", err)
	}
	if cause := within(t, b.ended, "cancellation"); !errors.Is(cause, context.Canceled) {
		t.Fatalf("cause %v", cause)
	}
	waitFor(t, func() bool { return lateReplies(n, srv) == 1 })
	// The next request is served as usual.
	b2 := dial(t, n, WithTransport(tr), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		return []byte("ok"), nil
	}))
	if r, err := c.Request(ctx5(t), b2.Address(), nil); err != nil || string(r) != "ok" {
		t.Fatalf("%q %v", r, err)
	}
	srv.emu.Lock()
	left := len(srv.served)
	srv.emu.Unlock()
	if left != 0 {
		t.Fatalf("%d requests still registered", left)
	}
}

// TestPeerRequestGroupCancel: every member of a group request hears that
// its caller gave up, or that the deadline passed, and each answer that
// comes too late is counted.
func TestPeerRequestGroupCancel(t *testing.T) {
	n := startNode(t)
	b := newBlocker()
	var members []*Conn
	for range 3 {
		m := dial(t, n, WithRequestHandler(b.handle))
		if err := m.Subscribe(ctx5(t), "g"); err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	c := dial(t, n)
	var late uint64
	for _, canceled := range []bool{true, false} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		if !canceled {
			ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
		}
		type outcome struct {
			res []GroupResult
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := c.RequestGroup(ctx, "g", nil)
			done <- outcome{res, err}
		}()
		for range members {
			within(t, b.started, "member's handler start")
		}
		if canceled {
			cancel()
		}
		o := within(t, done, "caller's return")
		if canceled && !errors.Is(o.err, context.Canceled) || !canceled && o.err != nil {
			t.Fatalf("canceled %v: %v", canceled, o.err)
		}
		for range members {
			cause := within(t, b.ended, "member's cancellation")
			if canceled && !errors.Is(cause, context.Canceled) || !canceled && !errors.Is(cause, context.DeadlineExceeded) {
				t.Fatalf("canceled %v: cause %v", canceled, cause)
			}
		}
		cancel()
		if canceled {
			late += uint64(len(members))
		}
		for _, r := range o.res {
			// At the deadline a member's own context ends as the node
			// gives up on it: its answer may still make it in time.
			switch {
			case errors.Is(r.Err, context.DeadlineExceeded):
				late++
			case r.Err != nil || string(r.Payload) != "late":
				t.Fatalf("member %s: %q %v", r.Address, r.Payload, r.Err)
			}
		}
		// Each answer that missed its request is counted once: at its
		// member's connection if the node had forgotten the request
		// (and told the member), else at the caller's, whose request
		// ended before the answer reached it.
		waitFor(t, func() bool {
			total := lateReplies(n, c)
			for _, m := range members {
				total += lateReplies(n, m)
			}
			return total == late
		})
	}
}

// TestPeerRequestCallerGone: a caller that closes its connection cancels
// its requests; the handler's context says why.
func TestPeerRequestCallerGone(t *testing.T) {
	n := startNode(t)
	b := newBlocker()
	srv := dial(t, n, WithRequestHandler(b.handle))
	c := dial(t, n)
	go c.Request(context.Background(), srv.Address(), nil)
	within(t, b.started, "handler start")
	c.Close()
	if cause := within(t, b.ended, "cancellation"); !errors.Is(cause, ErrPeerGone) {
		t.Fatalf("cause %v", cause)
	}
	waitFor(t, func() bool { return lateReplies(n, srv) == 1 })
}

// TestPeerRequestActorCancel: an actor's request has the same context.
func TestPeerRequestActorCancel(t *testing.T) {
	n := startNode(t)
	sys := quietActorSystem()
	got := make(chan *PeerRequest, 1)
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if r, ok := ac.Message().(*PeerRequest); ok {
			got <- r // answered below, too late
		}
	}))
	srv := dial(t, n, WithRequestActor(sys, pid))
	c := dial(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	go c.Request(ctx, srv.Address(), nil)
	r := within(t, got, "request")
	cancel()
	within(t, r.Context().Done(), "cancellation")
	if err := r.Respond([]byte("late"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return lateReplies(n, srv) == 1 })
}

// TestRequestConcurrency: with room for two, a handler that never returns
// (until its caller gives up) does not keep a second request from being
// answered.
func TestRequestConcurrency(t *testing.T) { bothTransports(t, testRequestConcurrency) }

func testRequestConcurrency(t *testing.T, tr Transport) {
	n := startNode(t)
	b := newBlocker()
	srv := dial(t, n, WithTransport(tr), WithRequestConcurrency(2), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "block" {
			return b.handle(ctx, r)
		}
		return r.Payload, nil
	}))
	c := dial(t, n, WithTransport(tr))
	bctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Request(bctx, srv.Address(), []byte("block"))
	within(t, b.started, "blocking handler start")
	for i := range 20 {
		if r, err := c.Request(ctx5(t), srv.Address(), []byte(fmt.Sprint(i))); err != nil || string(r) != fmt.Sprint(i) {
			t.Fatalf("request %d behind a blocked one: %q %v", i, r, err)
		}
	}
	cancel()
	within(t, b.ended, "blocked handler's cancellation")
	if _, err := Dial(ctx5(t), WithSocket(n.o.socket), WithRequestConcurrency(0)); err == nil {
		t.Fatal("concurrency 0 accepted")
	}
}

// TestRequestConcurrencyOneKeepsOrder: by default requests are served one
// at a time, in the order they arrived.
func TestRequestConcurrencyOneKeepsOrder(t *testing.T) {
	n := startNode(t)
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []string
	var running atomic.Int32
	srv := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if running.Add(1) > 1 {
			t.Error("two handlers at once")
		}
		defer running.Add(-1)
		<-gate
		mu.Lock()
		order = append(order, string(r.Payload))
		mu.Unlock()
		return nil, nil
	}))
	c := dial(t, n)
	var wg sync.WaitGroup
	var want []string
	for i := range 10 {
		p := fmt.Sprint(i)
		want = append(want, p)
		wg.Go(func() {
			if _, err := c.Request(ctx5(t), srv.Address(), []byte(p)); err != nil {
				t.Error(err)
			}
		})
		// The next request goes out once this one has arrived: the order
		// of arrival is the order of want.
		waitFor(t, func() bool {
			srv.emu.Lock()
			defer srv.emu.Unlock()
			return len(srv.served) == i+1
		})
	}
	close(gate)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Fatalf("served in order %v", order)
	}
}

// TestPeerRequestOldClient: a client that does not ask for
// FEATURE_PEER_CONTEXT gets requests as before, without deadline, and no
// MsgCancel; in a group with one that asked, each gets its own body.
func TestPeerRequestOldClient(t *testing.T) {
	n := startNode(t)
	old := dialOption(func(o *dialOptions) error { o.features = 0; return nil })
	echo := func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if _, ok := ctx.Deadline(); ok && !r.c.peerCtx {
			return nil, errors.New("a deadline from nowhere")
		}
		return append([]byte(r.To+":"), r.Payload...), nil
	}
	a := dial(t, n, old, WithRequestHandler(echo))
	b := dial(t, n, WithRequestHandler(echo))
	if a.peerCtx || !b.peerCtx {
		t.Fatalf("features granted: old %v, new %v", a.peerCtx, b.peerCtx)
	}
	for _, m := range []*Conn{a, b} {
		if err := m.Subscribe(ctx5(t), "g"); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, n)
	res, err := c.RequestGroup(ctx5(t), "g", []byte("hi"))
	if err != nil || len(res) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, r := range res {
		if r.Err != nil || string(r.Payload) != "g:hi" {
			t.Fatalf("%s: %q %v", r.Address, r.Payload, r.Err)
		}
	}
	if got, err := c.Request(ctx5(t), a.Address(), []byte("x")); err != nil || string(got) != a.Address()+":x" {
		t.Fatalf("%q %v", got, err)
	}
	if b.welcome.Load().GetFeatures() != uint32(pb.Feature_FEATURE_PEER_CONTEXT) || a.welcome.Load().GetFeatures() != 0 {
		t.Fatal("Welcome.features")
	}
}

// A handler that gives up with its context's error answers with that
// error's code, not a handler error: the requester sees the context
// error it would have seen had its own deadline fired first.
func TestPeerRequestContextErrorKeepsItsCode(t *testing.T) {
	n := startNode(t)
	srv := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "deadline" {
			return nil, fmt.Errorf("gave up: %w", context.DeadlineExceeded)
		}
		return nil, context.Canceled
	}))
	c := dial(t, n)
	if _, err := c.Request(ctx5(t), srv.Address(), []byte("deadline")); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrHandler) {
		t.Fatalf("handler returned DeadlineExceeded: requester got %v", err)
	}
	if _, err := c.Request(ctx5(t), srv.Address(), []byte("cancel")); !errors.Is(err, context.Canceled) || errors.Is(err, ErrHandler) {
		t.Fatalf("handler returned Canceled: requester got %v", err)
	}
}
