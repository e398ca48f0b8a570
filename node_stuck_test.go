package switchboard

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// A handler that ignores its context does not keep its connection: once
// the client is gone, the node announces the end and releases the
// connection without waiting; the handler's result, when it comes, is
// discarded and counted; the service's disconnect hook waits for it.
func TestStuckHandlerDoesNotPinConnection(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t)
		entered, unstick := make(chan struct{}), make(chan struct{})
		var returned, hookAfterReturn atomic.Bool
		hooked := make(chan struct{})
		n.HandleFunc(3, func(ctx context.Context, r *Request) ([]byte, error) {
			close(entered)
			<-unstick // ignores ctx
			returned.Store(true)
			return []byte("too late"), nil
		}, WithOnDisconnect(func(*Session) {
			hookAfterReturn.Store(returned.Load())
			close(hooked)
		}))
		watcher := dial(t, n)
		if err := watcher.Subscribe(ctx5(t), GroupConnections); err != nil {
			t.Fatal(err)
		}
		c := dial(t, n, WithTransport(tr), WithClientName("stuck"))
		notices(t, watcher, 1) // c connected
		callErr := make(chan error, 1)
		go func() {
			_, err := c.Call(context.Background(), 3, 1, []byte("payload"))
			callErr <- err
		}()
		<-entered
		c.Close()
		if err := <-callErr; err == nil {
			t.Fatal("a call cut short by Close succeeded")
		}
		// The end is announced while the handler still runs.
		nt := notices(t, watcher, 1)[0]
		if nt.Kind != NoticeDisconnected || nt.Member.Address != c.Address() {
			t.Fatalf("notice %+v, want c leaving", nt)
		}
		waitFor(t, func() bool { return n.Stats().Connections == 1 && n.Stats().StuckHandlers == 1 })
		select {
		case <-hooked:
			t.Fatal("the disconnect hook ran while a handler of its session still ran")
		default:
		}
		// The node still serves others meanwhile.
		if _, err := watcher.Call(ctx5(t), SystemService, SysPing, nil); err != nil {
			t.Fatal(err)
		}
		late := n.Stats().LateReplies
		close(unstick)
		<-hooked
		if !hookAfterReturn.Load() {
			t.Fatal("the disconnect hook ran before the stuck handler returned")
		}
		waitFor(t, func() bool { return n.Stats().StuckHandlers == 0 })
		if got := n.Stats().LateReplies; got != late+1 {
			t.Fatalf("late replies %d after the stuck handler returned, want %d", got, late+1)
		}
	})
}

// A handler's result that comes after its caller's deadline still goes
// out (the wire promises a reply to every call), and the client, which
// gave up, discards and counts it; it does not take a later call's place.
func TestLateHandlerResultCounted(t *testing.T) {
	n := startNode(t)
	gaveUp := make(chan struct{})
	n.HandleFunc(3, func(ctx context.Context, r *Request) ([]byte, error) {
		if r.Command == 1 {
			<-ctx.Done() // the caller's deadline, or its cancel
			<-gaveUp
			return []byte("late"), nil
		}
		return []byte("fresh"), nil
	})
	c := dial(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, 3, 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", err)
	}
	close(gaveUp)
	waitFor(t, func() bool { return c.FlowControl().LateReplies == 1 })
	if got, err := c.Call(ctx5(t), 3, 2, nil); err != nil || string(got) != "fresh" {
		t.Fatalf("next call: %q %v", got, err) // the late reply did not take its place
	}
}

// A client gone while its handler is stuck keeps its place under its
// uid's connection limit until the handler returns: stuck handlers
// cannot pile up past the limit.
func TestStuckHandlerKeepsUIDSlot(t *testing.T) {
	n := startNode(t, WithPrivilegedLimits(2, 0)) // the suite runs as root
	entered, unstick := make(chan struct{}), make(chan struct{})
	n.HandleFunc(3, func(ctx context.Context, r *Request) ([]byte, error) {
		close(entered)
		<-unstick
		return nil, nil
	})
	dial(t, n) // one slot
	c := dial(t, n)
	go c.Call(context.Background(), 3, 1, nil)
	<-entered
	c.Close()
	waitFor(t, func() bool { return n.Stats().StuckHandlers == 1 })
	if _, err := Dial(ctx5(t), WithSocket(n.SocketPath())); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("dial while the stuck handler holds the slot: %v, want ErrLimitExceeded", err)
	}
	close(unstick)
	waitFor(t, func() bool { return n.Stats().StuckHandlers == 0 })
	waitFor(t, func() bool {
		c, err := Dial(ctx5(t), WithSocket(n.SocketPath()))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// panicActor panics on command 3, never answers command 4, echoes the rest.
type panicActor struct{}

func (panicActor) Receive(ac actor.Context) {
	r, ok := ac.Message().(*ActorRequest)
	if !ok {
		return
	}
	switch r.Command {
	case 3:
		panic("actor handler bug")
	case 4:
		return // never answers
	case 5:
		ac.Stop(ac.Self()) // gives up serving
		return
	}
	r.Respond(r.Payload, nil)
}

// A panicking actor handler fails its call at once with ErrInternal (no
// deadline to wait for), and serves again after its restart.
func TestActorHandlerPanicAnswersInternal(t *testing.T) {
	n := startNode(t)
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} })); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n)
	bound, cancel := context.WithTimeout(context.Background(), time.Minute) // a bound for a failing test, no deadline the call could wait for
	defer cancel()
	if _, err := c.Call(bound, 9, 3, nil); !errors.Is(err, ErrInternal) {
		t.Fatalf("call to a panicking actor: %v, want ErrInternal", err)
	}
	if got, err := c.Call(ctx5(t), 9, 1, []byte("again")); err != nil || string(got) != "again" {
		t.Fatalf("after the panic: %q %v", got, err)
	}
	if st := n.Stats(); st.ActorPanics != 1 {
		t.Fatalf("ActorPanics %d, want 1", st.ActorPanics)
	}
	if cs := n.Connections(); len(cs) != 1 || cs[0].Panics != 1 {
		t.Fatalf("connections %+v, want one with one panic", cs)
	}
}

// When an actor handler stops, the calls waiting for it fail at once,
// and so do later calls to its service, until another actor takes it.
func TestActorHandlerStopped(t *testing.T) {
	n := startNode(t)
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} })); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n)
	bound, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waiting := make(chan error, 1)
	go func() {
		_, err := c.Call(bound, 9, 4, nil) // never answered
		waiting <- err
	}()
	waitFor(t, func() bool { return n.Connections()[0].ActorCalls == 1 })
	if _, err := c.Call(bound, 9, 5, nil); !errors.Is(err, ErrInternal) { // the actor stops serving it
		t.Fatalf("the call the actor stopped on: %v, want ErrInternal", err)
	}
	if err := <-waiting; !errors.Is(err, ErrInternal) {
		t.Fatalf("a call waiting for the stopped actor: %v, want ErrInternal", err)
	}
	if _, err := c.Call(bound, 9, 1, nil); !errors.Is(err, ErrInternal) {
		t.Fatalf("a later call: %v, want ErrInternal", err)
	}
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} })); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Call(bound, 9, 1, []byte("new actor")); err != nil || string(got) != "new actor" {
		t.Fatalf("after a new HandleActor: %q %v", got, err)
	}
}

// Calls waiting for an actor that never answers are bounded per
// connection, and forgotten at their deadline or cancel: they hold no
// memory once their caller gave up.
func TestActorCallsBoundedAndForgotten(t *testing.T) {
	n := startNode(t, WithMaxActorCalls(8))
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} })); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n)
	actorCalls := func() int {
		cs := n.Connections()
		if len(cs) != 1 {
			t.Fatalf("%d connections", len(cs))
		}
		return cs[0].ActorCalls
	}
	// Eight calls without a deadline fill the bound; the ninth is refused.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { c.Call(ctx, 9, 4, nil) })
	}
	waitFor(t, func() bool { return actorCalls() == 8 })
	if _, err := c.Call(ctx5(t), 9, 4, nil); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("a ninth waiting call: %v, want ErrTooManyPending", err)
	}
	cancel() // the callers give up: the node forgets their calls
	wg.Wait()
	waitFor(t, func() bool { return actorCalls() == 0 })
	// Many calls that time out leave nothing behind either.
	for i := range 2000 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if _, err := c.Call(ctx, 9, 4, nil); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrTooManyPending) {
			t.Fatalf("call %d: %v", i, err)
		}
		cancel()
	}
	waitFor(t, func() bool { return actorCalls() == 0 })
	if got, err := c.Call(ctx5(t), 9, 1, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("after: %q %v", got, err)
	}
}

// BenchmarkAbandonedActorCalls measures the heap after 100,000 actor
// calls whose callers gave up at a 1 ms deadline, the actor never
// answering (go test -run XXX -bench AbandonedActorCalls -benchtime 1x).
func BenchmarkAbandonedActorCalls(b *testing.B) {
	n := startNode(b)
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} })); err != nil {
		b.Fatal(err)
	}
	c := dial(b, n)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	const calls = 100_000
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < calls; i += 64 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				c.Call(ctx, 9, 4, nil)
				cancel()
			}
		})
	}
	wg.Wait()
	for n.Connections()[0].ActorCalls > 0 {
		time.Sleep(time.Millisecond)
	}
	after := heap()
	b.ReportMetric(float64(before)/(1<<20), "heap-before-MB")
	b.ReportMetric(float64(after)/(1<<20), "heap-after-MB")
}

// A service whose actor stopped is still listed by Services, with the
// name, description and commands its registration gave (and a note that
// it stopped), no longer as an actor.
func TestActorHandlerStoppedKeepsLabels(t *testing.T) {
	n := startNode(t)
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} }),
		WithName("worker"), WithDescription("does the work"), WithCommand(1, "echo", "the payload back")); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n)
	if _, err := c.Call(ctx5(t), 9, 5, nil); !errors.Is(err, ErrInternal) { // the actor stops serving
		t.Fatalf("the call the actor stopped on: %v, want ErrInternal", err)
	}
	ss, err := c.Services(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	var got *ServiceInfo
	for i := range ss {
		if ss[i].ID == 9 {
			got = &ss[i]
		}
	}
	if got == nil || got.Name != "worker" || !strings.HasPrefix(got.Description, "does the work") || !strings.Contains(got.Description, "stopped") ||
		got.Actor || len(got.Commands) != 1 || got.Commands[0] != (CommandInfo{ID: 1, Name: "echo", Description: "the payload back"}) {
		t.Fatalf("service 9 after its actor stopped: %+v", got)
	}
}
