package switchboard

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// directPair dials a responder (echoing "re:" + payload) and a caller,
// both with WithDirectPeers(true).
func directPair(t *testing.T, n *Node, handler func(ctx context.Context, r *PeerRequest) ([]byte, error)) (srv, cl *Conn) {
	if handler == nil {
		handler = func(ctx context.Context, r *PeerRequest) ([]byte, error) {
			return append([]byte("re:"), r.Payload...), nil
		}
	}
	srv = dial(t, n, WithDirectPeers(true), WithRequestHandler(handler))
	cl = dial(t, n, WithDirectPeers(true))
	return srv, cl
}

// goDirect makes requests until the caller's channel is up.
func goDirect(t *testing.T, cl, srv *Conn) {
	t.Helper()
	ctx := ctx5(t)
	deadline := time.Now().Add(5 * time.Second)
	for cl.DirectStats().Opened == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no direct channel: %+v", cl.DirectStats())
		}
		if _, err := cl.Request(ctx, srv.Address(), []byte("warm")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDirectRequest: after the first request, requests to a peer's
// address go over the direct channel, with their replies and errors.
func TestDirectRequest(t *testing.T) {
	n := startNode(t)
	srv, cl := directPair(t, n, func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "fail" {
			return nil, errors.New("no way")
		}
		if r.From == "" || r.To == "" {
			return nil, errors.New("no addresses")
		}
		return append([]byte("re:"), r.Payload...), nil
	})
	goDirect(t, cl, srv)
	ctx := ctx5(t)
	before := cl.DirectStats().Requests
	routed := n.Stats().Delivered
	for i := range 100 {
		r, err := cl.Request(ctx, srv.Address(), []byte(fmt.Sprint(i)))
		if err != nil || string(r) != fmt.Sprintf("re:%d", i) {
			t.Fatalf("request %d: %q %v", i, r, err)
		}
	}
	if got := cl.DirectStats().Requests - before; got != 100 {
		t.Fatalf("%d of 100 requests went direct", got)
	}
	if d := n.Stats().Delivered - routed; d != 0 {
		t.Fatalf("the node routed %d messages meanwhile", d)
	}
	if _, err := cl.Request(ctx, srv.Address(), []byte("fail")); !errors.Is(err, ErrHandler) || !contains(err.Error(), "no way") {
		t.Fatalf("failing handler: %v", err)
	}
	big := make([]byte, cl.MaxMessage()-3)
	if r, err := cl.Request(ctx, srv.Address(), big); err != nil || len(r) != len(big)+3 {
		t.Fatalf("large request: %d %v", len(r), err)
	}
	if st := n.Stats(); st.DirectOpened != 1 || st.DirectChannels != 1 {
		t.Fatalf("node stats %+v", st)
	}
}

// TestDirectOff: without the option on both ends, or with brokering off,
// requests route through the node as before.
func TestDirectOff(t *testing.T) {
	check := func(t *testing.T, n *Node, srvOpt, clOpt bool) {
		srv := dial(t, n, WithDirectPeers(srvOpt), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return r.Payload, nil }))
		cl := dial(t, n, WithDirectPeers(clOpt))
		ctx := ctx5(t)
		for range 20 {
			if _, err := cl.Request(ctx, srv.Address(), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := cl.Request(ctx, srv.Address(), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if st := cl.DirectStats(); st.Requests != 0 {
			t.Fatalf("went direct: %+v", st)
		}
	}
	t.Run("responder", func(t *testing.T) { check(t, startNode(t), false, true) })
	t.Run("caller", func(t *testing.T) { check(t, startNode(t), true, false) })
	t.Run("node", func(t *testing.T) { check(t, startNode(t, WithDirectBrokering(false)), true, true) })
}

// TestDirectPolicyRefused: a policy that refuses the request refuses the
// channel too, and the request fails as it does routed.
func TestDirectPolicyRefused(t *testing.T) {
	n := startNode(t)
	srv, cl := directPair(t, n, nil)
	n.SetPolicy(denySendTo{srv.Address()})
	ctx := ctx5(t)
	for range 5 {
		if _, err := cl.Request(ctx, srv.Address(), []byte("x")); !errors.Is(err, ErrRefused) {
			t.Fatalf("got %v", err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if st := cl.DirectStats(); st.Requests != 0 || st.Opened != 0 {
		t.Fatalf("went direct: %+v", st)
	}
	if st := n.Stats(); st.DirectOpened != 0 {
		t.Fatalf("node opened a channel: %+v", st)
	}
}

// denySendTo refuses sending to one address, allows the rest.
type denySendTo struct{ addr string }

func (d denySendTo) Allow(who Cred, what Action, target string) error {
	if what == ActionSend && target == d.addr {
		return errors.New("not to " + d.addr)
	}
	return nil
}

// TestDirectPolicyReload: a policy change revokes the channel; requests
// route again, and refuse if the new policy says so.
func TestDirectPolicyReload(t *testing.T) {
	n := startNode(t)
	srv, cl := directPair(t, n, nil)
	goDirect(t, cl, srv)
	n.SetPolicy(denySendTo{srv.Address()})
	ctx := ctx5(t)
	waitFor(t, func() bool { return cl.DirectStats().Open == 0 })
	if _, err := cl.Request(ctx, srv.Address(), []byte("x")); !errors.Is(err, ErrRefused) {
		t.Fatalf("after the reload: %v", err)
	}
	if st := n.Stats(); st.DirectRevoked != 1 || st.DirectChannels != 0 {
		t.Fatalf("node stats %+v", st)
	}
}

// TestDirectMonitor: a monitor of either end revokes the channel and sees
// the requests after it.
func TestDirectMonitor(t *testing.T) {
	for _, watch := range []string{"caller", "responder"} {
		t.Run(watch, func(t *testing.T) {
			n := startNode(t)
			srv, cl := directPair(t, n, nil)
			goDirect(t, cl, srv)
			mon := dial(t, n)
			target := cl.Address()
			if watch == "responder" {
				target = srv.Address()
			}
			ctx := ctx5(t)
			if err := mon.Monitor(ctx, target); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return cl.DirectStats().Open == 0 })
			before := cl.DirectStats().Requests
			if _, err := cl.Request(ctx, srv.Address(), []byte("seen")); err != nil {
				t.Fatal(err)
			}
			for {
				e := recv(t, mon)
				if e.Kind == EventMonitor && string(e.Payload) == "seen" {
					break
				}
			}
			if cl.DirectStats().Requests != before {
				t.Fatal("went direct under a monitor")
			}
		})
	}
}

// TestDirectPeerGone: the responder closing or dying mid-request fails
// the caller with ErrPeerGone at once.
func TestDirectPeerGone(t *testing.T) {
	n := startNode(t)
	started := make(chan struct{}, 1)
	srv, cl := directPair(t, n, func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "warm" {
			return nil, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	goDirect(t, cl, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		<-started
		srv.Close()
	}()
	t0 := time.Now()
	before := cl.DirectStats().Requests
	_, err := cl.Request(ctx, srv.Address(), []byte("hang"))
	if !errors.Is(err, ErrPeerGone) {
		t.Fatalf("got %v", err)
	}
	if cl.DirectStats().Requests != before+1 {
		t.Fatal("the request was not direct")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestDirectCancel: a caller's deadline reaches the handler over the
// channel, and a cancel cancels its context.
func TestDirectCancel(t *testing.T) {
	n := startNode(t)
	got := make(chan error, 2)
	srv, cl := directPair(t, n, func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "warm" {
			return nil, nil
		}
		if _, ok := ctx.Deadline(); !ok && string(r.Payload) == "deadline" {
			got <- errors.New("no deadline")
			return nil, nil
		}
		<-ctx.Done()
		got <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	goDirect(t, cl, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := cl.Request(ctx, srv.Address(), []byte("deadline")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if err := <-got; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler saw %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, err := cl.Request(ctx2, srv.Address(), []byte("cancel")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler saw %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not canceled")
	}
	if cl.DirectStats().Requests < 2 {
		t.Fatalf("not direct: %+v", cl.DirectStats())
	}
}

// TestDirectOrder: messages and requests from one caller reach the
// responder in the order sent, across the switch to the channel and back
// (a revoke).
func TestDirectOrder(t *testing.T) {
	n := startNode(t)
	seen := make(chan int, 10000)
	defer directReaderLag.Store(0)
	// Requests arrive as events: one queue, in which the order shows.
	srv := dial(t, n, WithDirectPeers(true))
	cl := dial(t, n, WithDirectPeers(true))
	var got []int
	go func() {
		for {
			e, err := srv.RecvEvent(context.Background())
			if err != nil {
				return
			}
			if e.Kind == EventMessage || e.Kind == EventRequest {
				var i int
				fmt.Sscan(string(e.Payload), &i)
				seen <- i
			}
			if e.Kind == EventRequest {
				e.Reply(nil, nil)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const total = 1200
	for i := range total {
		var err error
		if i == total/4 {
			n.SetPolicy(nil) // a revoke: back to routed, and on again
			// From here the responder's channel goroutine lags: the event
			// reader must not overtake what waits in the channel (the fence).
			directReaderLag.Store(int64(time.Millisecond))
		}
		switch {
		case i == total/2+1: // right after a message on the channel: GoRequest routes, in order
			a := cl.GoRequest(ctx, srv.Address(), []byte(fmt.Sprint(i)), nil)
			<-a.Done
			err = a.Err
		case i%3 == 0:
			err = cl.SendTo(ctx, srv.Address(), []byte(fmt.Sprint(i)))
		default:
			_, err = cl.Request(ctx, srv.Address(), []byte(fmt.Sprint(i)))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for len(got) < total {
		select {
		case i := <-seen:
			got = append(got, i)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d arrived", len(got), total)
		}
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("position %d: %d (around: %v)", i, v, got[max(0, i-3):min(len(got), i+3)])
		}
	}
	st := cl.DirectStats()
	if st.Requests == 0 || st.Sends == 0 || st.Opened < 3 {
		t.Fatalf("the switch did not happen (twice): %+v", st)
	}
}

// TestDirectLongHandler: a handler that runs longer than the responder's
// channel goroutine waits before its watcher reads the channel in its
// place, with callers on other goroutines writing meanwhile, inline or
// not: every request is answered, in turn (one handler at a time).
func TestDirectLongHandler(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprint("inline=", inline), func(t *testing.T) {
			n := startNode(t)
			var running, most atomic.Int32
			opts := []DialOption{WithDirectPeers(true), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
				now := running.Add(1)
				defer running.Add(-1)
				if now > most.Load() {
					most.Store(now)
				}
				if string(r.Payload) != "warm" {
					time.Sleep(3 * time.Millisecond) // past directWatchAfter: the watcher reads meanwhile
				}
				return append([]byte("re:"), r.Payload...), nil
			})}
			if inline {
				opts = append(opts, WithInlineRequests())
			}
			srv := dial(t, n, opts...)
			cl := dial(t, n, WithDirectPeers(true))
			goDirect(t, cl, srv)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			before := cl.DirectStats().Requests
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for g := range 4 {
				wg.Go(func() {
					for i := range 10 {
						p := fmt.Sprintf("%d.%d", g, i)
						if r, err := cl.Request(ctx, srv.Address(), []byte(p)); err != nil || string(r) != "re:"+p {
							errs <- fmt.Errorf("%s: %q %v", p, r, err)
							return
						}
						if err := cl.SendTo(ctx, srv.Address(), []byte("m")); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := cl.DirectStats().Requests - before; got != 40 {
				t.Fatalf("%d of 40 requests went direct", got)
			}
			if most.Load() != 1 {
				t.Fatalf("%d handlers ran at once", most.Load())
			}
		})
	}
}

// TestDirectServedInPlace: one caller's requests are served on the
// responder's channel goroutine, which read them (no hand-off to the
// handler's goroutine), and the caller reads its replies itself (no
// goroutine of the channel's on the caller's side reads them).
func TestDirectServedInPlace(t *testing.T) {
	// A handler that runs past directWatchAfter (a preempted goroutine on
	// a loaded machine, or under the race detector) lets the watcher
	// queue the next request: not what this test looks at.
	old := directWatchAfter
	directWatchAfter = time.Minute
	t.Cleanup(func() { directWatchAfter = old })
	n := startNode(t)
	var inPlace, elsewhere atomic.Int32
	srv, cl := directPair(t, n, func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		buf := make([]byte, 8192)
		if strings.Contains(string(buf[:runtime.Stack(buf, false)]), ".directServe(") {
			inPlace.Add(1)
		} else if string(r.Payload) != "warm" {
			elsewhere.Add(1)
		}
		return r.Payload, nil
	})
	goDirect(t, cl, srv)
	// The routed warm-up's last request may still hold the handler's turn
	// for a moment after its reply: then a request waits in the queue.
	time.Sleep(50 * time.Millisecond)
	ctx := ctx5(t)
	for range 50 {
		if _, err := cl.Request(ctx, srv.Address(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if inPlace.Load() < 50 || elsewhere.Load() != 0 {
		t.Fatalf("%d requests served on the channel goroutine, %d elsewhere", inPlace.Load(), elsewhere.Load())
	}
	buf := make([]byte, 1<<20)
	// One reader in this process: the responder's. The caller's end has
	// its keeper, which reads nothing while callers wait.
	if s := string(buf[:runtime.Stack(buf, true)]); strings.Count(s, ".directRead(") != 1 {
		t.Fatalf("%d channel readers, want the responder's alone:\n%s", strings.Count(s, ".directRead("), s)
	}
}

// TestDirectLateReplies: replies to requests their callers gave up on
// keep coming after the caller stopped asking; nobody waits for them, yet
// they must be read (the caller's keeper), or they fill the reply ring and
// the responder, blocked writing the next one, serves nobody else.
func TestDirectLateReplies(t *testing.T) {
	n := startNode(t)
	big := make([]byte, 32<<10) // 3 fill the channel's reply ring
	started := make(chan struct{}, 8)
	srv, cl := directPair(t, n, func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		if string(r.Payload) == "late" {
			started <- struct{}{}
			time.Sleep(20 * time.Millisecond) // a handler that does not watch ctx
			return big, nil
		}
		return r.Payload, nil
	})
	goDirect(t, cl, srv)
	before := cl.DirectStats()
	for range 8 {
		// The caller gives up once its request reached the handler (a
		// deadline instead could end it before the request went out).
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := cl.Request(ctx, srv.Address(), []byte("late"))
			errc <- err
		}()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach the handler")
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	}
	if cl.DirectStats().Requests-before.Requests != 8 {
		t.Fatal("not direct")
	}
	other := dial(t, n)
	ctx := ctx5(t)
	t0 := time.Now()
	if r, err := other.Request(ctx, srv.Address(), []byte("x")); err != nil || string(r) != "x" {
		t.Fatalf("%q %v", r, err)
	}
	// 8 handlers of 20 ms before it; a responder stalled on the full ring
	// waits for the channel's idle end (5 s).
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("another caller waited %v behind late replies nobody read", d)
	}
	waitFor(t, func() bool { return cl.DirectStats().Late-before.Late == 8 })
}
