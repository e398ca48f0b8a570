package conntest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"
)

// Timeout bounds every wait of this package: past it, the test fails.
const Timeout = 5 * time.Second

func await(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(Timeout):
		t.Fatalf("%s: not within %v", what, Timeout)
	}
}

// NewSystem returns an actor system that logs nothing, shut down when the
// test ends.
func NewSystem(t testing.TB) *actor.ActorSystem {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	t.Cleanup(sys.Shutdown)
	return sys
}

// Spawner is a conn.Spawner: it spawns actors as children of a root actor
// that supervises them as the node's does (a failing child is stopped).
type Spawner struct {
	sys  *actor.ActorSystem
	root *actor.PID
	mu   sync.Mutex
	gone map[string]chan struct{} // child name → closed once it stopped
}

type spawnChild struct {
	props *actor.Props
	name  string
	reply chan any // *actor.PID or error
}

// NewSpawner starts the root actor; it stops, with its children, when the
// test ends.
func NewSpawner(t testing.TB, sys *actor.ActorSystem) *Spawner {
	s := &Spawner{sys: sys, gone: map[string]chan struct{}{}}
	s.root = sys.Root.Spawn(actor.PropsFromFunc(s.receive, actor.WithSupervisor(
		actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.StopDirective }))))
	t.Cleanup(func() { sys.Root.StopFuture(s.root).Wait() })
	return s
}

func (s *Spawner) receive(ac actor.Context) {
	switch m := ac.Message().(type) {
	case *spawnChild:
		if pid, err := ac.SpawnNamed(m.props, m.name); err != nil {
			m.reply <- err
		} else {
			m.reply <- pid
		}
	case *actor.Terminated:
		ch := s.stopped(strings.TrimPrefix(m.Who.Id, ac.Self().Id+"/"))
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

func (s *Spawner) stopped(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone[name] == nil {
		s.gone[name] = make(chan struct{})
	}
	return s.gone[name]
}

// SpawnChild spawns props under the root actor as name.
func (s *Spawner) SpawnChild(props *actor.Props, name string) (*actor.PID, error) {
	reply := make(chan any, 1)
	s.sys.Root.Send(s.root, &spawnChild{props: props, name: name, reply: reply})
	select {
	case r := <-reply:
		if err, ok := r.(error); ok {
			return nil, err
		}
		return r.(*actor.PID), nil
	case <-time.After(Timeout):
		return nil, errors.New("conntest: the root actor did not answer")
	}
}

// WaitStopped waits until the child spawned as name (say "group-1") has
// stopped.
func (s *Spawner) WaitStopped(t testing.TB, name string) {
	t.Helper()
	await(t, s.stopped(name), "actor "+name+" stopping")
}

// Host is a conn.Host for tests. Calls go to ServeFunc, or are answered
// with their payload; bus frames (copied) and every Closed are recorded.
type Host struct {
	ServeFunc func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result
	OnClosed  func(e *conn.Endpoint, why conn.Reason) // runs after Closed is recorded

	mu     sync.Mutex
	frames []conn.BusFrame
	why    []conn.Reason
}

func (h *Host) Serve(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
	if h.ServeFunc != nil {
		return h.ServeFunc(ctx, e, in)
	}
	return conn.Result{Payload: bytes.Clone(in.Payload)}
}

func (h *Host) Route(e *conn.Endpoint, f conn.BusFrame) {
	f.Body, f.Owned = bytes.Clone(f.Body), true
	h.mu.Lock()
	h.frames = append(h.frames, f)
	h.mu.Unlock()
}

func (h *Host) Closed(e *conn.Endpoint, why conn.Reason) {
	h.mu.Lock()
	h.why = append(h.why, why)
	h.mu.Unlock()
	if h.OnClosed != nil {
		h.OnClosed(e, why)
	}
}

// BusFrames returns the bus frames routed so far.
func (h *Host) BusFrames() []conn.BusFrame {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]conn.BusFrame(nil), h.frames...)
}

// Reasons returns the reason of every Closed call so far.
func (h *Host) Reasons() []conn.Reason {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]conn.Reason(nil), h.why...)
}

// Frame is a whole reply or event read by the client, chunks joined, its
// body copied. For a reply Aux is the code; for an event, the drop count.
type Frame struct {
	shm.Header
	Body []byte
}

// Client is the far end of an Endpoint started by Start.
type Client struct {
	EP           *conn.Endpoint
	Link         *shm.Link     // the client's side of the rings
	Sock         *net.UnixConn // the client's end of the control socket
	Host         *Host         // the endpoint's host, if it is a *Host
	Req          *shm.Producer // the request ring
	t            testing.TB
	resp, ev     *shm.Consumer
	respRe, evRe pb.Reassembly
	nextID       atomic.Uint64
}

var lastID atomic.Uint64

// Start starts an Endpoint under sp with cfg, whose Link and Sock it
// provides. Unset fields get test defaults: a unique ID, an address
// ":t.<id>", a *Host, 1 MiB messages, a queue of 64 events, no spinning,
// and Complete answers any call id (CompleteUnknown).
// The rings hold 64 KiB each. The endpoint is closed and waited for when
// the test ends.
func Start(t testing.TB, sys *actor.ActorSystem, sp conn.Spawner, cfg conn.Config) *Client {
	t.Helper()
	node, peer, err := shm.NewLocalLink(pb.ConnRings([3]int{64 << 10, 64 << 10, 64 << 10}), shm.WithSpin(0))
	if err != nil {
		t.Fatal(err)
	}
	var socks [2]*net.UnixConn
	t.Cleanup(func() { // after the endpoint's cleanup, below
		for _, s := range socks {
			if s != nil {
				s.Close()
			}
		}
		node.Close()
		peer.Close()
	})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	for i := 0; err == nil && i < 2; i++ {
		f := os.NewFile(uintptr(fds[i]), "conntest")
		var nc net.Conn
		nc, err = net.FileConn(f)
		f.Close()
		socks[i], _ = nc.(*net.UnixConn)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.ID = cmp.Or(cfg.ID, lastID.Add(1))
	cfg.Address = cmp.Or(cfg.Address, fmt.Sprintf(":t.%d", cfg.ID))
	cfg.Name = cmp.Or(cfg.Name, fmt.Sprintf("client-%d", cfg.ID))
	cfg.Host = cmp.Or(cfg.Host, conn.Host(&Host{}))
	cfg.MaxMessage, cfg.EventQueue, cfg.EventBytes = cmp.Or(cfg.MaxMessage, 1<<20), cmp.Or(cfg.EventQueue, 64), cmp.Or(cfg.EventBytes, 1<<20)
	if !cfg.SpinSet {
		cfg.Spin, cfg.SpinSet = 0, true
	}
	cfg.Link, cfg.Sock, cfg.Transport = node, socks[0], "shm"
	cfg.CompleteUnknown = true // the group and registry tests answer calls Serve never saw
	ep, err := conn.Start(sys, cfg, sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ep.Close(conn.Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "test over"}) // no-op if it ended
		await(t, ep.Done(), fmt.Sprintf("endpoint %d done at cleanup", cfg.ID))
	})
	c := &Client{EP: ep, Link: peer, Sock: socks[1], t: t, Req: peer.Producer(pb.RingRequest),
		resp: peer.Consumer(pb.RingResponse), ev: peer.Consumer(pb.RingEvent),
		respRe: pb.Reassembly{MaxSize: 1 << 30}, evRe: pb.Reassembly{MaxSize: 1 << 30}}
	c.Host, _ = cfg.Host.(*Host)
	return c
}

// Write writes a message to the request ring, in chunks if it is larger
// than a frame.
func (c *Client) Write(h shm.Header, body []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := pb.WriteMessage(ctx, ctx, c.Req, h, false, body); err != nil {
		c.t.Fatalf("writing a request: %v", err)
	}
}

// Call makes a call and returns its reply, checking that it answers it.
func (c *Client) Call(service, command uint16, payload []byte) Frame {
	c.t.Helper()
	id := c.nextID.Add(1)
	c.Write(shm.Header{Kind: pb.KindCall, Service: service, Command: command, ID: id}, payload)
	r := c.NextReply(Timeout)
	if r.ID != id {
		c.t.Fatalf("call %d answered by a reply to %d", id, r.ID)
	}
	return r
}

// NextReply returns the next reply on the response ring.
func (c *Client) NextReply(timeout time.Duration) Frame {
	c.t.Helper()
	return c.next(c.resp, &c.respRe, timeout, "reply")
}

// NextEvent returns the next event on the event ring.
func (c *Client) NextEvent(timeout time.Duration) Frame {
	c.t.Helper()
	return c.next(c.ev, &c.evRe, timeout, "event")
}

// NextNotice returns the next event, which must be a bus notice, and the
// destination it was sent to (a group, or the client's address).
func (c *Client) NextNotice(timeout time.Duration) (*pb.Notice, string) {
	c.t.Helper()
	e := c.NextEvent(timeout)
	if e.Service != pb.BusService || e.Command != pb.MsgNotice {
		c.t.Fatalf("event %d is %#x/%d, not a notice", e.ID, e.Service, e.Command)
	}
	_, to, _, payload, err := pb.DecodeMsg(e.Body, false)
	n := &pb.Notice{}
	if err == nil {
		err = gproto.Unmarshal(payload, n)
	}
	if err != nil {
		c.t.Fatalf("notice %d: %v", e.ID, err)
	}
	return n, string(to)
}

// NoEvent checks that no event arrives within d.
func (c *Client) NoEvent(d time.Duration) { c.t.Helper(); c.none(c.ev, d, "event") }

// NoReply checks that no reply arrives within d.
func (c *Client) NoReply(d time.Duration) { c.t.Helper(); c.none(c.resp, d, "reply") }

func (c *Client) next(cons *shm.Consumer, re *pb.Reassembly, timeout time.Duration, what string) Frame {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		f, err := cons.Next()
		if err == nil {
			m, whole, err := re.Add(f)
			if err != nil {
				c.t.Fatalf("%s: %v", what, err)
			}
			if whole {
				out := Frame{Header: m.Header, Body: bytes.Clone(m.Body)}
				cons.Release()
				return out
			}
		} else if err != shm.ErrRingEmpty {
			c.t.Fatalf("%s: %v", what, err)
		} else if err := cons.Wait(ctx); err != nil && !cons.Ready() {
			c.t.Fatalf("no %s within %v: %v", what, timeout, err)
		}
	}
}

func (c *Client) none(cons *shm.Consumer, d time.Duration, what string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if cons.Wait(ctx); cons.Ready() {
		f, _ := cons.Next()
		c.t.Fatalf("unexpected %s: kind %d, %#x/%d, id %d, aux %d, %d bytes", what, f.Kind, f.Service, f.Command, f.ID, f.Aux, len(f.Body))
	}
}

// Goodbye reads the node's Goodbye from the socket.
func (c *Client) Goodbye() *pb.Goodbye {
	c.t.Helper()
	c.Sock.SetReadDeadline(time.Now().Add(Timeout))
	m, err := pb.ReadControl(c.Sock)
	if err != nil || m.GetGoodbye() == nil {
		c.t.Fatalf("no Goodbye on the socket: %v %v", m, err)
	}
	return m.GetGoodbye()
}

// Close closes the client's end of the socket, as a client that dies does,
// and waits until the endpoint is done.
func (c *Client) Close() {
	c.t.Helper()
	c.Sock.Close()
	c.Wait()
}

// Wait waits until the endpoint is done, and returns the reason its Host
// (a *Host) was given: Closed runs before Done is closed.
func (c *Client) Wait() conn.Reason {
	c.t.Helper()
	await(c.t, c.EP.Done(), fmt.Sprintf("endpoint %d done", c.EP.ID()))
	if rs := c.Host.Reasons(); len(rs) > 0 {
		return rs[0]
	}
	c.t.Fatal("endpoint done without Host.Closed")
	return conn.Reason{}
}
