package switchboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
)

// TestSessions: per-service accept checks, connect and disconnect hooks,
// and private data kept per (connection, service).
func TestSessions(t *testing.T) {
	n := startNode(t)
	var mu sync.Mutex
	var connected, disconnected []uint64
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
		count, _ := r.Session.Data.(int)
		r.Session.Data = count + 1
		return []byte(fmt.Sprint(count + 1)), nil
	},
		WithOnConnect(func(s *Session) error {
			mu.Lock()
			connected = append(connected, s.ConnID())
			mu.Unlock()
			s.Data = 100
			return nil
		}),
		WithOnDisconnect(func(s *Session) {
			mu.Lock()
			disconnected = append(disconnected, s.ConnID())
			mu.Unlock()
		}))
	n.HandleFunc(2, func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil },
		WithAccept(func(c Cred) bool { return false }))
	n.HandleFunc(3, func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil },
		WithOnConnect(func(s *Session) error { return errors.New("not today") }))

	a, b := dial(t, n), dial(t, n)
	ctx := context.Background()
	for i, want := range []string{"101", "102", "103"} {
		got, err := a.Call(ctx, 1, 0, nil)
		if err != nil || string(got) != want {
			t.Fatalf("call %d on a: %q %v", i, got, err)
		}
	}
	if got, err := b.Call(ctx, 1, 0, nil); err != nil || string(got) != "101" {
		t.Fatalf("b has its own session: %q %v", got, err)
	}
	if _, err := a.Call(ctx, 2, 0, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("refused by accept: %v", err)
	}
	if _, err := a.Call(ctx, 3, 0, nil); !errors.Is(err, ErrRefused) || !contains(err.Error(), "not today") {
		t.Fatalf("refused by connect hook: %v", err)
	}
	a.Close()
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(disconnected) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(connected) != 2 || disconnected[0] != a.ID() {
		t.Fatalf("connected %v, disconnected %v (a is %d)", connected, disconnected, a.ID())
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSelector: a service nobody registered is served by the selector.
func TestSelector(t *testing.T) {
	n := startNode(t, WithSelector(func(service, command uint16) Handler {
		if service >= 1000 && service < 2000 {
			return HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
				return []byte(fmt.Sprint(r.Service, "/", r.Command)), nil
			})
		}
		return nil
	}))
	c := dial(t, n)
	if got, err := c.Call(context.Background(), 1234, 5, nil); err != nil || string(got) != "1234/5" {
		t.Fatalf("selected: %q %v", got, err)
	}
	if _, err := c.Call(context.Background(), 2000, 5, nil); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("not selected: %v", err)
	}
}

// echoActor serves ActorRequests, replying after a hop through its mailbox.
type echoActor struct{}

func (echoActor) Receive(ac actor.Context) {
	if r, ok := ac.Message().(*ActorRequest); ok {
		if err := r.Context.Err(); err != nil {
			r.Respond(nil, fmt.Errorf("context already ended: %w", err))
			return
		}
		if r.Command == 2 {
			r.Respond(nil, errors.New("actor says no"))
			return
		}
		r.Respond(append([]byte("actor: "), r.Payload...), nil)
	}
}

func TestActorHandler(t *testing.T) {
	n := startNode(t)
	pid := n.ActorSystem().Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return echoActor{} }))
	n.HandleActor(9, pid)
	c := dial(t, n)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			p := []byte(fmt.Sprint(i))
			got, err := c.Call(context.Background(), 9, 1, p)
			if err != nil || string(got) != "actor: "+string(p) {
				t.Errorf("actor call: %q %v", got, err)
			}
		})
	}
	wg.Wait()
	if _, err := c.Call(context.Background(), 9, 2, nil); !errors.Is(err, ErrHandler) {
		t.Fatalf("actor error: %v", err)
	}
}

// TestEventModes: events through a handler, to an actor, and by polling Fd.
func TestEventModes(t *testing.T) {
	n := startNode(t)
	var conns sync.Map
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
		conns.Store(r.Session.ConnID(), r.Session)
		return nil, nil
	})
	emit := func(c *Conn, count int) {
		t.Helper()
		if _, err := c.Call(context.Background(), 1, 0, nil); err != nil {
			t.Fatal(err)
		}
		s, _ := conns.Load(c.ID())
		for i := range count {
			s.(*Session).SendEvent(uint16(i), []byte{byte(i)})
		}
	}

	got := make(chan Event, 100)
	h := dial(t, n, WithEventHandler(func(e Event) { got <- e }))
	emit(h, 10)
	for i := range 10 {
		select {
		case e := <-got:
			if e.Command != uint16(i) || e.Service != 1 {
				t.Fatalf("handler event %d: %+v", i, e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("handler got no event")
		}
	}

	sys := actor.NewActorSystem()
	actorGot := make(chan *Event, 100)
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if e, ok := ac.Message().(*Event); ok {
			actorGot <- e
		}
	}))
	a := dial(t, n, WithEventActor(sys, pid))
	emit(a, 10)
	for i := range 10 {
		select {
		case e := <-actorGot:
			if e.Command != uint16(i) {
				t.Fatalf("actor event %d: %+v", i, e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("actor got no event")
		}
	}

	p := dial(t, n)
	if readable(t, p.Fd(), 0) {
		t.Fatal("Fd readable with no event")
	}
	if _, ok := p.TryRecvEvent(); ok {
		t.Fatal("event out of nowhere")
	}
	emit(p, 3)
	if !readable(t, p.Fd(), 5000) {
		t.Fatal("Fd not readable with events waiting")
	}
	for i := range 3 {
		var e Event
		var ok bool
		waitFor(t, func() bool { e, ok = p.TryRecvEvent(); return ok })
		if e.Command != uint16(i) {
			t.Fatalf("polled event %d: %+v", i, e)
		}
	}
	if readable(t, p.Fd(), 0) {
		t.Fatal("Fd readable after the last event was taken")
	}
	if fc := p.FlowControl(); fc.EventsTotal != 3 || fc.EventsWaiting != 0 {
		t.Fatalf("flow control %+v", fc)
	}
}

func readable(t *testing.T, fd int, timeoutMs int) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, timeoutMs)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func TestConnData(t *testing.T) {
	n := startNode(t)
	c := dial(t, n)
	if c.Data() != nil {
		t.Fatal("data before SetData")
	}
	c.SetData("mine")
	if c.Data() != "mine" {
		t.Fatal("data lost")
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	n := startNode(t)
	c := dial(t, n)
	c.Close()
	c.Close()
	if _, err := c.Call(context.Background(), SystemService, SysPing, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
	n.Close()
	n.Close()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	n := startNode(t)
	other, err := NewNode(WithSocket(n.SocketPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Listen(); err == nil || !contains(err.Error(), "another node serves") {
		t.Fatalf("second node on a live socket: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := t.TempDir() + "/node.sock"
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a socket file nobody serves: what a killed node leaves
	n, err := NewNode(WithSocket(path))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Listen(); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
}

// TestGarbageHandshake: a client that sends garbage, or nothing, is
// dropped; the node keeps serving the others.
func TestGarbageHandshake(t *testing.T) {
	n := startNode(t, WithHandshakeTimeout(200*time.Millisecond))
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		make([]byte, 24),
		shm.AppendFrame(nil, shm.Header{Kind: pb.KindControl}, []byte{0xff, 0xff, 0xff}),
		shm.AppendFrame(nil, shm.Header{Kind: pb.KindCall}, nil),
		nil, // silence: the handshake timeout ends it
	} {
		c, err := net.Dial("unix", n.SocketPath())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("junk %q: node did not close the connection: %v", junk, err)
		}
	}
	c := dial(t, n)
	if _, err := c.Call(context.Background(), SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCallView(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t)
		echoService(n)
		c := dial(t, n, WithTransport(tr), WithSpin(50*time.Millisecond))
		ctx := context.Background()
		inPlace := 0
		for i := range 100 {
			p := []byte(fmt.Sprint("view ", i))
			r, err := c.CallView(ctx, svcEcho, cmdEcho, p)
			if err != nil || string(r.Body) != string(p) {
				t.Fatalf("call %d: %q %v", i, r.Body, err)
			}
			if r.c != nil {
				inPlace++
			}
			r.Release()
			r.Release() // idempotent
		}
		if inPlace == 0 && tr == TransportSHM { // over the socket the client's own pump is as quick as the caller
			t.Fatal("no reply was read in place")
		}
		t.Logf("%d of 100 replies read in place", inPlace)
		if _, err := c.CallView(ctx, svcEcho, cmdFail, nil); !errors.Is(err, ErrHandler) {
			t.Fatalf("error through CallView: %v", err)
		}
		// Calls from other goroutines go on while views come and go.
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					p := []byte(fmt.Sprint(g, "/", i))
					if g%2 == 0 {
						r, err := c.CallView(ctx, svcEcho, cmdEcho, p)
						if err != nil || string(r.Body) != string(p) {
							t.Errorf("view %s: %q %v", p, r.Body, err)
							return
						}
						r.Release()
						continue
					}
					got, err := c.Call(ctx, svcEcho, cmdEcho, p)
					if err != nil || string(got) != string(p) {
						t.Errorf("call %s: %q %v", p, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// TestEventMailboxBound: events sent while the connection's pump is busy
// wait in its mailbox only up to the queue bound; the rest are dropped
// and counted, none lost silently.
func TestEventMailboxBound(t *testing.T) {
	n := startNode(t, WithEventQueue(64), WithEventQueueBytes(1<<20), WithOverflow(DropOldest), WithRings(1<<20, 1<<20, 4096))
	echoService(n)
	c := dial(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { // keeps the pump inside a handler
		_, err := c.Call(ctx, svcEcho, cmdSlow, nil)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	const sent = 5000
	for i := range sent {
		if err := n.SendEvent(c.ID(), 1, uint16(i), []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	var got, dropped uint64
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	for got+dropped < sent {
		e, err := c.RecvEvent(rctx)
		if err != nil {
			t.Fatalf("after %d events and %d dropped: %v", got, dropped, err)
		}
		got++
		dropped += e.Dropped
	}
	// The mailbox holds what a 4 KiB ring and a queue of 64 could: 234.
	if got > 64+4096/24+4096/24 || got+dropped != sent {
		t.Fatalf("%d received, %d dropped of %d", got, dropped, sent)
	}
	t.Logf("%d received, %d dropped", got, dropped)
}

// TestProtocolViolation: a client that writes a frame the protocol does
// not allow is disconnected with that reason; the node serves the others.
func TestProtocolViolation(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t)
		echoService(n)
		bad, good := dial(t, n, WithTransport(tr)), dial(t, n, WithTransport(tr))
		bad.wmu.Lock()
		err := bad.req.Write(context.Background(), shm.Header{Kind: pb.KindReply, ID: 1}, []byte("not a request"))
		bad.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-bad.gone:
		case <-time.After(5 * time.Second):
			t.Fatal("the node kept a client that broke the protocol")
		}
		if err := bad.err(); !errors.Is(err, ErrProtocol) {
			t.Fatalf("bad client ended with %v, want ErrProtocol", err)
		}
		if _, err := good.Call(context.Background(), svcEcho, cmdEcho, []byte("x")); err != nil {
			t.Fatalf("other client: %v", err)
		}
	})
}

// TestVersionMismatch: a client speaking another protocol version is
// refused with a reason saying so.
func TestVersionMismatch(t *testing.T) {
	n := startNode(t)
	c, err := net.Dial("unix", n.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	if err := pb.WriteControl(uc, &pb.Control{Msg: &pb.Control_Hello{Hello: &pb.Hello{ProtocolVersion: 99}}}, nil); err != nil {
		t.Fatal(err)
	}
	m, err := pb.ReadControl(uc)
	if err != nil {
		t.Fatal(err)
	}
	r := m.GetRefused()
	if r == nil || !errors.Is(codeError(r.GetCode(), r.GetReason()), ErrVersionMismatch) || !strings.Contains(r.GetReason(), "99") {
		t.Fatalf("got %v, want a version-mismatch refusal naming version 99", m)
	}
}

func TestConnections(t *testing.T) {
	n := startNode(t)
	a := dial(t, n, WithClientName("alpha"))
	b := dial(t, n, WithClientName("beta"))
	var list []ConnInfo
	waitFor(t, func() bool { list = n.Connections(); return len(list) == 2 })
	if list[0].ID != a.ID() || list[0].Name != "alpha" || list[1].Address != b.Address() || list[0].Cred.PID != int32(os.Getpid()) {
		t.Fatalf("connections %+v", list)
	}
	a.Close()
	waitFor(t, func() bool { list = n.Connections(); return len(list) == 1 && list[0].ID == b.ID() })
}

func TestRecvEventView(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t)
		const count = 20000
		n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
			for i := range count {
				r.SendEvent(uint16(i), []byte(fmt.Sprint(i)))
			}
			return nil, nil
		})
		c := dial(t, n, WithTransport(tr), WithSpin(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.Send(ctx, 1, 0, nil); err != nil {
			t.Fatal(err)
		}
		inPlace := 0
		for i := range count {
			e, err := c.RecvEventView(ctx)
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if e.Command != uint16(i) || string(e.Payload) != fmt.Sprint(i) || e.Dropped != 0 {
				t.Fatalf("event %d: %+v", i, e)
			}
			if e.view != nil {
				inPlace++
			}
			e.Release()
			e.Release() // a second Release is harmless
		}
		t.Logf("%d of %d events read in place", inPlace, count)
		// Replies keep flowing while events are viewed.
		if _, err := c.Call(ctx, SystemService, SysPing, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestEventLargerThanRing: an event larger than the whole event ring goes
// out in chunks as the client makes room, without blocking the node, and
// arrives whole and in order with the small ones around it.
func TestEventLargerThanRing(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t, WithRings(1<<20, 1<<20, 4096))
		big := make([]byte, 20000)
		for i := range big {
			big[i] = byte(i * 13)
		}
		n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
			r.SendEvent(1, []byte("before"))
			r.SendEvent(2, big)
			r.SendEvent(3, []byte("after"))
			return nil, nil
		})
		c := dial(t, n, WithTransport(tr))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Call(ctx, 1, 0, nil); err != nil {
			t.Fatal(err)
		}
		for i, want := range [][]byte{[]byte("before"), big, []byte("after")} {
			e, err := c.RecvEvent(ctx)
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if e.Command != uint16(i+1) || !bytes.Equal(e.Payload, want) || e.Seq != uint64(i+1) {
				t.Fatalf("event %d: command %d, %d bytes, seq %d", i, e.Command, len(e.Payload), e.Seq)
			}
		}
	})
}

// TestReleaseWithBlockedSocketWriter: a socket-transport client that
// stops reading (the node's writer blocks) and then breaks the protocol is
// still released: a blocked write must not hold the release up.
func TestReleaseWithBlockedSocketWriter(t *testing.T) {
	n := startNode(t)
	raw, err := net.Dial("unix", n.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	uc := raw.(*net.UnixConn)
	uc.SetReadBuffer(4096)
	if err := pb.WriteControl(uc, &pb.Control{Msg: &pb.Control_Hello{Hello: &pb.Hello{ProtocolVersion: pb.ProtocolVersion, ClientName: "raw", Transport: pb.Transport_TRANSPORT_SOCKET}}}, nil); err != nil {
		t.Fatal(err)
	}
	m, err := pb.ReadControl(uc)
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	id := m.GetWelcome().GetConnectionId()
	cn := n.reg.Lookup(id)
	payload := make([]byte, 32<<10)
	// A client that never reads: its socket fills, the writer blocks.
	for i := 0; i < 400; i++ {
		n.SendEvent(id, 1, 1, payload)
		if i%20 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // sendFrames now blocked in Write: we never read
	// A bad frame on the socket: the node ends the connection (no goodbye on this path).
	raw.Write(make([]byte, shm.HeaderSize))
	select {
	case <-cn.Done():
		t.Log("released")
	case <-time.After(3 * time.Second):
		t.Fatal("connection never released: release waits for sockMu held by sendFrames' blocked Write")
	}
}
