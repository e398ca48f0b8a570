package switchboard

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// TestEndSeenEverywhere: a node's shutdown reaches Done and Err, the
// disconnect handler (after the events), the event actor (a
// *Disconnected after the events), Fd and TryRecvEvent, and RecvEvent.
func TestEndSeenEverywhere(t *testing.T) { bothTransports(t, testEndSeenEverywhere) }

func testEndSeenEverywhere(t *testing.T, tr Transport) {
	n := startNode(t)
	var handled atomic.Int32
	handlerErr := make(chan error, 1)
	h := dial(t, n, WithTransport(tr),
		WithEventHandler(func(Event) { handled.Add(1) }),
		WithDisconnectHandler(func(err error) { handlerErr <- err }))

	sys := quietActorSystem()
	actorEnd := make(chan error, 1)
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if d, ok := ac.Message().(*Disconnected); ok {
			actorEnd <- d.Err
		}
	}))
	a := dial(t, n, WithTransport(tr), WithEventActor(sys, pid))
	p := dial(t, n, WithTransport(tr))
	fd := p.Fd()
	r := dial(t, n, WithTransport(tr))
	for _, c := range []*Conn{h, a, p, r} {
		if c.Err() != nil {
			t.Fatalf("Err before the end: %v", c.Err())
		}
		select {
		case <-c.Done():
			t.Fatal("Done before the end")
		default:
		}
	}
	if readable(t, fd, 0) {
		t.Fatal("Fd readable with nothing to take")
	}

	n.Close()
	isShutdown := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNodeShutdown) || !errors.Is(err, ErrNodeGone) || errors.Is(err, ErrNodeLost) || errors.Is(err, ErrClosed) {
			t.Fatalf("%s: %v, want ErrNodeShutdown and ErrNodeGone", what, err)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeNodeGone {
			t.Fatalf("%s: %v: no *Error with CodeNodeGone", what, err)
		}
	}
	isShutdown("handler", within(t, handlerErr, "disconnect handler"))
	isShutdown("actor", within(t, actorEnd, "actor's *Disconnected"))
	if !readable(t, fd, 5000) {
		t.Fatal("Fd not readable after the end")
	}
	if e, ok := p.TryRecvEvent(); ok {
		t.Fatalf("TryRecvEvent after the end: %+v", e)
	}
	if !readable(t, fd, 0) {
		t.Fatal("Fd not readable for good after the end")
	}
	isShutdown("poll", p.Err())
	start := time.Now()
	_, err := r.RecvEvent(context.Background())
	isShutdown("RecvEvent", err)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("RecvEvent took %v after the end", d)
	}
	for _, c := range []*Conn{h, a, p, r} {
		within(t, c.Done(), "Done")
		isShutdown("Err", c.Err())
		c.Close()
		isShutdown("Err after Close", c.Err()) // the first reason stays
	}
	sys.Shutdown()
}

// TestCloseEnds: Close gives ErrClosed to Err, Done, the disconnect
// handler (which Close waits for) and the actor.
func TestCloseEnds(t *testing.T) {
	n := startNode(t)
	var called atomic.Value
	c := dial(t, n, WithDisconnectHandler(func(err error) {
		time.Sleep(20 * time.Millisecond) // Close waits for it
		called.Store(err)
	}))
	c.Close()
	if err, _ := called.Load().(error); !errors.Is(err, ErrClosed) {
		t.Fatalf("handler after Close: %v, want ErrClosed", err)
	}
	if !errors.Is(c.Err(), ErrClosed) || errors.Is(c.Err(), ErrNodeGone) {
		t.Fatalf("Err: %v", c.Err())
	}
	<-c.Done()
}

// TestDisconnectHandlerMayClose: the disconnect handler may call Close,
// whether the node ended the connection or Close did.
func TestDisconnectHandlerMayClose(t *testing.T) {
	n := startNode(t)
	done := make(chan error, 2)
	var a, b *Conn
	a = dial(t, n, WithDisconnectHandler(func(err error) { a.Close(); done <- err }))
	b = dial(t, n, WithDisconnectHandler(func(err error) { b.Close(); done <- err }))
	a.Close()
	if err := within(t, done, "handler of a closed Conn"); !errors.Is(err, ErrClosed) {
		t.Fatalf("%v, want ErrClosed", err)
	}
	n.Close()
	if err := within(t, done, "handler of a Conn whose node shut down"); !errors.Is(err, ErrNodeShutdown) {
		t.Fatalf("%v, want ErrNodeShutdown", err)
	}
}

// TestRequestContextCause: a peer request's context, cancelled because
// the connection ended, gives the connection's Err as its cause.
func TestRequestContextCause(t *testing.T) {
	n := startNode(t)
	cause, started := make(chan error, 1), make(chan struct{})
	srv := dial(t, n, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	}))
	// To itself: no other connection's end can cancel it first (ErrPeerGone).
	go srv.Request(context.Background(), srv.Address(), nil)
	within(t, started, "the request")
	n.Close()
	if err := within(t, cause, "request's cause"); !errors.Is(err, ErrNodeShutdown) {
		t.Fatalf("cause %v, want ErrNodeShutdown", err)
	}
}

// TestGoodbyeErrors: how each way the node ends a connection reads.
func TestGoodbyeErrors(t *testing.T) {
	for _, tc := range []struct {
		code     pb.Code
		is, isnt []error
	}{
		{pb.Code_CODE_NODE_SHUTTING_DOWN, []error{ErrNodeGone, ErrNodeShutdown}, []error{ErrNodeLost, ErrSlowConsumer}},
		{pb.Code_CODE_SLOW_CONSUMER, []error{ErrNodeGone, ErrSlowConsumer}, []error{ErrNodeShutdown, ErrNodeLost}},
		{pb.Code_CODE_PROTOCOL_VIOLATION, []error{ErrNodeGone, ErrProtocol}, []error{ErrNodeShutdown, ErrNodeLost}},
		{pb.Code_CODE_OK, []error{ErrNodeGone}, []error{ErrNodeShutdown, ErrNodeLost, ErrClosed}},
	} {
		err := goodbyeError(&pb.Goodbye{Code: tc.code, Reason: "why"})
		for _, s := range tc.is {
			if !errors.Is(err, s) {
				t.Errorf("%v: %q does not match %v", tc.code, err, s)
			}
		}
		for _, s := range tc.isnt {
			if errors.Is(err, s) {
				t.Errorf("%v: %q matches %v", tc.code, err, s)
			}
		}
		if !contains(err.Error(), "why") {
			t.Errorf("%v: %q lost the reason", tc.code, err)
		}
	}
	lost := nodeLost("gone")
	if !errors.Is(lost, ErrNodeLost) || !errors.Is(lost, ErrNodeGone) || errors.Is(lost, ErrNodeShutdown) {
		t.Errorf("lost: %v", lost)
	}
}

// TestDialNotReady: no socket, or a socket nobody accepts on, is
// ErrNodeNotReady; neither refused nor not authentic.
func TestDialNotReady(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the socket file stays: ECONNREFUSED
	for _, tc := range []struct {
		path string
		sys  error
	}{
		{filepath.Join(dir, "none.sock"), fs.ErrNotExist},
		{filepath.Join(dir, "nodir", "none.sock"), fs.ErrNotExist},
		{stale, syscall.ECONNREFUSED},
	} {
		_, err := Dial(ctx5(t), WithSocket(tc.path))
		if !errors.Is(err, ErrNodeNotReady) || !errors.Is(err, tc.sys) || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotAuthentic) || errors.Is(err, ErrNodeGone) ||
			strings.Count(err.Error(), "switchboard: ") != 1 {
			t.Errorf("%s: %v, want ErrNodeNotReady and %v, said with one prefix", tc.path, err, tc.sys)
		}
	}
}

// TestWaitForNode: a Dial WithWaitForNode started before the node
// listens connects once it does; without a node, ctx ends the wait.
func TestWaitForNode(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "later", "node.sock")
	dialed := make(chan error, 1)
	go func() {
		c, err := Dial(ctx5(t), WithSocket(socket), WithWaitForNode())
		if err == nil {
			_, err = c.Call(context.Background(), SystemService, SysPing, nil)
			c.Close()
		}
		dialed <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-dialed:
		t.Fatalf("Dial returned before the node listened: %v", err)
	default:
	}
	n, err := NewNode(WithSocket(socket))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	go n.Serve(context.Background())
	defer n.Close()
	if err := within(t, dialed, "Dial after the node listened"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, WithSocket(filepath.Join(t.TempDir(), "never.sock")), WithWaitForNode())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial without a node: %v, want context.DeadlineExceeded", err)
	}
}
