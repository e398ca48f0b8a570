package switchboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
)

// Conn is a client's connection to a node. It is safe for concurrent use.
//
// # Locks
//
// A lock is taken only while the locks before it in this order are held
// or free, never after one that follows it:
//
//	NameClient.closeMu → nameTaps.mu → mapMu (shared) → rmu → evmu → wmu → sockMu
//
// hmu (direct channels only) comes after evmu (serveInline) and before
// emu (serveRequests); the channel goroutine only tries it, under emu.
// pmu, emu, internMu, held.mu and flush.lmu are leaves:
// nothing is locked while one is held. A NameClient's closeMu comes
// before all of these (its Close leaves groups, which takes the Conn's
// locks), and so does nameTaps.mu (client_name_tap.go), after closeMu: it
// is held across the bus calls that join and leave groups (a name
// client's start and Close, and the Conn's own Subscribe,
// SubscribeWithMembers and Unsubscribe); the event reader never takes it
// (it reads the tap set through an atomic pointer). A NameClient's mu is
// a leaf, taken by the event reader under evmu (or in the socket reader)
// when it hands the name client an event.
// The pump holds rmu, then evmu, never both; a caller spinning for its
// reply (lead, finishCall's poll) tries mapMu shared (it may hold a viewed
// event or reply, which Close waits for: failing means closing), then
// tries rmu; a
// viewed event (RecvEventView) holds evmu until its Release, and a viewed
// reply (CallView) rmu until its; a receiver in RecvEvents or RecvEvent
// holds evmu for one batch (client_batch.go); Close takes mapMu, rmu, evmu and wmu in
// that order before it unmaps the rings. With WithReconnect, install
// (client_reconnect.go) takes mapMu, rmu, evmu, wmu, sockMu and then pmu
// to put a new session's transport in place of the old one's: the fields
// from sock to bridge are written only there, and in handshake.
type Conn struct {
	o       dialOptions
	sock    *net.UnixConn // under sockMu, or read by the session's goroutines
	link    *shm.Link     // under pmu, or read by the session's goroutines and Close
	req     *shm.Producer // under wmu
	resp    *shm.Consumer // under rmu, or mapMu shared while !closing
	ev      *shm.Consumer // under evmu, or mapMu shared while !closing
	bell    atomic.Pointer[shm.Doorbell]
	welcome atomic.Pointer[pb.Welcome]
	lastDst atomic.Pointer[destCache] // the prefix of the last destination sent to (client_bus.go)
	maxMsg  int                       // the first node's: requests are bounded by it for the Conn's life
	bridge  *shm.Link                 // socket transport: the socket's side of the local rings
	// sockEvents bounds the events held for the socket transport: what the
	// client's buffer, the node's queue and a full event ring of the
	// smallest frames would hold together with shared memory.
	sockEvents int

	// The rings' mapping: readers that look without rmu or evmu hold
	// mapMu shared; Close holds it to unmap.
	mapMu   sync.RWMutex
	closing atomic.Bool // the connection ends: stop looking at the rings

	// Requests (client → node).
	wmu    sync.Mutex // request writers, one at a time (the ring has one producer)
	closed bool       // under wmu: the rings are unmapped
	sockMu sync.Mutex // frames written to the socket do not interleave
	nextID atomic.Uint64

	// Replies (node → client).
	rmu      sync.Mutex    // the response ring's reader: the pump, or a caller spinning for its reply
	replies  pb.Reassembly // under rmu: replies arriving in chunks
	spin     time.Duration // how long one caller spins for its reply (0: never)
	spinning atomic.Bool   // a caller is spinning; the others block
	leadSpin *shm.Spinner  // its adaptive budget (at most spin), the spinning caller's
	late     atomic.Uint64 // replies whose caller had given up
	overflow asyncOverflow // completions waiting for room on their done channels (client_async.go)

	// Calls waiting for replies, and the end of the connection.
	pmu     sync.Mutex
	pending map[uint64]*call
	goneErr error         // under pmu: why the connection ended (or, while down, why it is in a gap)
	gone    chan struct{} // closed when it ended
	rc      reconnState   // WithReconnect's state (client_reconnect.go)

	// Events (node → client): read from the ring under evmu, queued under
	// emu for the receiver, the handler or the actor.
	evmu     sync.Mutex    // the event ring's reader: the pump, or RecvEventView
	evChunks pb.Reassembly // under evmu: an event arriving in chunks
	viewGen  atomic.Uint64 // bumped when an event is viewed in place and when it is released
	viewHeld atomic.Bool   // an event is viewed in place: the pump leaves the event ring alone
	emu      sync.Mutex
	equeue   []Event // under emu, from ehead on
	ehead    int
	enq, deq uint64                                    // under emu: events ever queued, and ever taken out of the queue (taken or dropped)
	reqq     []*PeerRequest                            // under emu: requests waiting for the request handler
	served   map[[pb.ReplyHandleSize]byte]*PeerRequest // under emu: requests queued or being served, for MsgCancel
	ewake    chan struct{}                             // a token: events wait
	rqwake   chan struct{}                             // a token: requests wait
	pollFd   int                                       // under emu: readable while events wait (once polled)
	polled   atomic.Bool                               // Fd was called: keep pollFd readable while events wait
	evbufs   bufPool
	viewbufs viewPool // copies of CallView replies the pump delivered, back at Release
	received atomic.Uint64
	dropped  atomic.Uint64
	taps     nameTaps // the name clients' share of the events (client_name_tap.go)
	// RecvEvents' receivers read the event ring themselves (client_batch.go).
	readers   atomic.Int32               // receivers in RecvEvent or RecvEvents
	ringTaken atomic.Bool                // receivers read the event ring: the pump leaves it alone (until handBack)
	evSleep   atomic.Bool                // one of them sleeps: the pump wakes it when events come
	handback  atomic.Pointer[time.Timer] // gives the ring back to the pump after the last one left
	// The hand-back timer runs (handbackArmed) while receivers come and
	// go; leaves counts their departures, leavesSeen is the count the
	// timer saw last (client_batch.go, handBack).
	handbackArmed      atomic.Bool
	leaves, leavesSeen atomic.Uint64

	// The pump's sleep, made once: no allocation per park.
	parker                                 *shm.Parker
	parkConds                              []shm.Cond // the response ring, then the event ring
	readyRoomFn, readyFullFn, readyBatchFn func() bool

	// Peer requests: the node sends their deadlines and cancellations
	// (FEATURE_PEER_CONTEXT); with WithRequestConcurrency above 1,
	// serveRequests hands them to workers it starts (it alone counts them).
	peerCtx bool
	work    chan *PeerRequest
	workers int
	hmu     sync.Mutex // with direct channels and one request at a time: held while a handler runs (serveRequests, serveInline, directServe)

	// Peer requests served inline (WithInlineRequests).
	inHandler     atomic.Bool                   // an inline request handler runs on the pump
	inlineStarted atomic.Pointer[chan struct{}] // closed when an inline handler starts, replaced when it ends
	life          context.Context               // ends when the connection ends
	lifeCancel    context.CancelCauseFunc       // with Err's value

	internMu   sync.Mutex // the cache of intern
	interned   [8]string
	internNext int

	data atomic.Pointer[any] // SetData's

	flush flushState // what was accepted and taken: Flush, Close, Drain (client_flush.go)

	closeOnce sync.Once
	wg        sync.WaitGroup // the connection's goroutines

	// WithDisconnectHandler's f, on a goroutine of its own (client_life.go):
	// Close waits for it unless it had begun.
	final      sync.WaitGroup
	finalBegun atomic.Bool

	dir *directSet // direct peer channels, nil unless granted (client_direct.go)
}

// Dial connects to a node, checks that the node's process runs as the
// expected user, and sets up the connection's rings.
func Dial(ctx context.Context, opts ...DialOption) (*Conn, error) {
	o := dialOptions{eventQueue: 1024, name: "switchboard-go", requestConc: 1,
		features: uint32(pb.Feature_FEATURE_PEER_CONTEXT)}
	for _, opt := range opts {
		if err := opt.applyDial(&o); err != nil {
			return nil, err
		}
	}
	if o.socket == "" {
		o.socket = DefaultSocketPath()
	}
	sock, err := dialNode(ctx, &o)
	if err != nil {
		return nil, err
	}
	c, err := handshake(ctx, sock, o)
	if err != nil {
		sock.Close()
		return nil, err
	}
	return c, nil
}

func handshake(ctx context.Context, sock *net.UnixConn, o dialOptions) (*Conn, error) {
	s, err := openSession(ctx, sock, &o)
	if err != nil {
		return nil, err
	}
	pollFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		s.link.Close()
		return nil, err
	}
	w := s.welcome
	c := &Conn{
		o: o, maxMsg: int(w.GetMaxMessageBytes()), pending: map[uint64]*call{}, gone: make(chan struct{}),
		spin:       s.spin,
		sockEvents: o.eventQueue + int(w.GetEventQueueLimit()) + int(w.GetEventRingBytes())/shm.FrameSize(0),
		ewake:      make(chan struct{}, 1), pollFd: pollFd, rqwake: make(chan struct{}, 1),
		peerCtx: w.GetFeatures()&uint32(pb.Feature_FEATURE_PEER_CONTEXT) != 0, work: make(chan *PeerRequest),
	}
	c.useSession(s)
	c.initDirect(w.GetFeatures()) // client_direct.go
	c.readyRoomFn, c.readyFullFn, c.readyBatchFn = c.readyRoom, c.readyFull, c.readyBatch
	c.life, c.lifeCancel = context.WithCancelCause(context.Background())
	started := make(chan struct{})
	c.inlineStarted.Store(&started)
	if s.bridge != nil {
		c.spin = 0 // nothing to gain: the replies come from this process's own bridge
	}
	c.leadSpin = shm.NewReplySpinner(c.spin)
	c.startSession()
	if o.onEvent != nil || o.actorPID != nil {
		c.wg.Go(c.deliver)
	} else if o.onDisconnect != nil {
		c.wg.Go(func() { <-c.gone; c.disconnected() })
	}
	if o.onRequest != nil || o.requestPID != nil {
		c.wg.Go(c.serveRequests)
	}
	c.rc.held.groups = map[string]bool{}
	if o.reconnect != nil {
		c.rc.init()
		c.wg.Go(c.reconnect)
	}
	return c, nil
}

// openSession is the handshake on sock: the node's credentials, Hello,
// Welcome (or Refused), and the rings.
func openSession(ctx context.Context, sock *net.UnixConn, o *dialOptions) (*session, error) {
	cred, err := shm.PeerCred(sock)
	if err != nil {
		return nil, err
	}
	if o.nodeUID != nil && cred.UID != *o.nodeUID || o.nodeUID == nil && cred.UID != 0 && cred.UID != uint32(os.Geteuid()) {
		return nil, codeError(pb.Code_CODE_NOT_AUTHENTIC, fmt.Sprintf("node process %d runs as uid %d", cred.PID, cred.UID))
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	sock.SetDeadline(deadline)
	transport := pb.Transport_TRANSPORT_SHM
	if o.transport == TransportSocket {
		transport = pb.Transport_TRANSPORT_SOCKET
	}
	hello := &pb.Hello{ProtocolVersion: pb.ProtocolVersion, ClientName: o.name, Transport: transport,
		RequestRingBytes: o.rings[0], ResponseRingBytes: o.rings[1], EventRingBytes: o.rings[2], MaxMessageBytes: o.maxMessage,
		Cpus: shm.CPUMask(), Features: o.features}
	// A node that refuses us may do so, and close, before reading Hello: a
	// failed write still leaves its Refused to read.
	helloErr := pb.WriteControl(sock, &pb.Control{Msg: &pb.Control_Hello{Hello: hello}}, nil)
	msg, fds, err := pb.ReadControlFds(sock, 8)
	if err != nil {
		if helloErr != nil {
			return nil, wrapErr("hello", helloErr)
		}
		if errors.Is(err, io.EOF) {
			return nil, wrapErr("node closed the connection during the handshake", ErrNodeGone)
		}
		return nil, wrapErr("handshake", err)
	}
	closeFds := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if r := msg.GetRefused(); r != nil {
		closeFds()
		return nil, codeError(r.GetCode(), r.GetReason())
	}
	w := msg.GetWelcome()
	if w == nil {
		closeFds()
		return nil, codeError(pb.Code_CODE_PROTOCOL_VIOLATION, "expected Welcome")
	}
	spin := derefOr(o.spin, shm.SpinWith(w.GetCpus()))
	var link, bridge *shm.Link
	if w.GetTransport() == pb.Transport_TRANSPORT_SOCKET {
		closeFds()
		if transport != pb.Transport_TRANSPORT_SOCKET {
			return nil, codeError(pb.Code_CODE_PROTOCOL_VIOLATION, "node chose the socket transport")
		}
		sizes := [3]int{int(w.GetRequestRingBytes()), int(w.GetResponseRingBytes()), int(w.GetEventRingBytes())}
		bridge, link, err = shm.NewLocalLink(pb.SocketRings(sizes), shm.WithSpin(0))
		if err != nil {
			return nil, fmt.Errorf("switchboard: rings for the socket transport: %w", err)
		}
	} else {
		if link, err = shm.OpenLink(fds, shm.WithSpin(spin)); err != nil {
			return nil, fmt.Errorf("switchboard: shared memory from the node: %w", err)
		}
	}
	if bridge == nil && !pb.IsConnLayout(link) {
		link.Close()
		return nil, codeError(pb.Code_CODE_PROTOCOL_VIOLATION, "unexpected ring layout")
	}
	sock.SetDeadline(time.Time{})
	return &session{sock: sock, link: link, bridge: bridge, welcome: w, spin: spin}, nil
}

// ID returns the connection id the node assigned: 1, 2, 3, … in each run
// of the node, so a restarted node gives its ids again; Address does not.
func (c *Conn) ID() uint64 { return c.welcome.Load().GetConnectionId() }

// Address returns the connection's address on the bus,
// ":NODE.INCARNATION.ID": unique to this connection, in this run of the
// node and every later one.
func (c *Conn) Address() string { return c.welcome.Load().GetAddress() }

// MaxMessage returns the negotiated largest message.
func (c *Conn) MaxMessage() int { return c.maxMsg }

// SetData stores the connection's private data (libqb's context).
func (c *Conn) SetData(v any) {
	c.data.Store(&v)
}

// Data returns what SetData stored.
func (c *Conn) Data() any {
	if p := c.data.Load(); p != nil {
		return *p
	}
	return nil
}

// FlowControl reports the connection's backlog and losses.
func (c *Conn) FlowControl() FlowControl {
	c.pmu.Lock()
	inflight := len(c.pending)
	c.pmu.Unlock()
	c.emu.Lock()
	waiting := len(c.equeue) - c.ehead
	c.emu.Unlock()
	return FlowControl{InFlight: inflight, EventsWaiting: waiting, EventsTotal: c.received.Load(),
		EventsDropped: c.dropped.Load(), LateReplies: c.late.Load(), AsyncUndelivered: c.overflow.undelivered.Load(),
		Accepted: c.flush.accepted.Load(), Unsent: c.flush.unsent.Load()}
}

// FlowControl describes the connection's backlog.
type FlowControl struct {
	InFlight      int    // calls waiting for a reply
	EventsWaiting int    // events received and not yet taken
	EventsTotal   uint64 // events received
	EventsDropped uint64 // events the node dropped for this connection
	LateReplies   uint64 // replies that arrived after their call gave up
	// AsyncUndelivered counts the completions of asynchronous calls never
	// sent on their done channel: it was closed, or nobody took them
	// within AsyncGrace after the connection ended (see Conn.Go).
	AsyncUndelivered uint64
	// Accepted counts the messages this client accepted (Send, SendTo and
	// Publish without WantAnswer, answers to peer requests); Unsent, set
	// by Close, those of them the node was not confirmed to have taken
	// when the client let go: an upper bound, as the node may still have
	// taken some of them after (see Flush and Close).
	Accepted, Unsent uint64
}

// err returns why the connection ended, or nil.
func (c *Conn) err() error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return c.goneErr
}

// end records why the connection ended, fails every pending call, and
// wakes every wait on the rings.
//
// With WithReconnect, a node that went away (reconnectable) begins a gap
// instead (lose); while in a gap, only Close and giving up end it.
func (c *Conn) end(err error) {
	c.pmu.Lock()
	if c.goneErr != nil && !(c.rc.down && endsGap(err)) {
		c.pmu.Unlock()
		return
	}
	if c.o.reconnect != nil && c.goneErr == nil && reconnectable(err) {
		c.lose(err) // unlocks pmu
		return
	}
	c.rc.down = false
	c.goneErr = err
	calls := c.pending
	c.pending = map[uint64]*call{}
	close(c.gone)
	c.lifeCancel(err)
	link := c.link
	c.endSession()
	c.pmu.Unlock()
	failAsync(calls, err) // a synchronous call sees gone; an asynchronous one is told
	c.closing.Store(true)
	link.Shutdown()
	c.emu.Lock()
	select {
	case c.ewake <- struct{}{}:
	default:
	}
	c.pollEnded()
	c.emu.Unlock()
}

// watch reads frames from the socket; EOF means the node is gone. With
// the socket transport, replies go into the local response ring and
// events into the event queue.
func (c *Conn) watch() {
	reason := nodeLost("the socket closed without a goodbye")
	defer func() { c.end(reason) }()
	if c.bridge == nil {
		for {
			var msg *pb.Control
			var fds []int
			var err error
			if c.dir != nil { // direct channels come with descriptors (client_direct_io.go)
				msg, fds, err = pb.ReadControlFds(c.sock, 8)
			} else {
				msg, err = pb.ReadControl(c.sock)
			}
			if err != nil {
				return
			}
			if msg.GetDirectChannel() != nil || msg.GetDirectClosed() != nil || len(fds) > 0 {
				c.directControl(msg, fds)
				continue
			}
			reason = c.control(msg, reason)
		}
	}
	resp := c.bridge.Producer(pb.RingResponse)
	// Events may be larger than replies: the node chunks each at its own
	// ring's frame limit.
	fr := shm.NewFrameReader(c.sock, max(resp.MaxBody(), c.bridge.Producer(pb.RingEvent).MaxBody()))
	events := pb.Reassembly{MaxInFlight: 1, MaxSize: c.maxMsg + pb.MaxMsgOverhead}
	for {
		f, err := fr.Next()
		if errors.Is(err, shm.ErrCorrupt) {
			reason = fmt.Errorf("%w: %w", ErrProtocol, err)
			return
		}
		if err != nil {
			return
		}
		switch f.Kind {
		case pb.KindReply:
			err = resp.Write(context.Background(), f.Header, f.Body)
		case pb.KindEvent:
			// Events skip the local ring: a full ring must not stop this
			// loop, or the replies behind the events would wait too.
			m, whole, err := events.Add(f)
			if err != nil {
				reason = fmt.Errorf("%w: event: %w", ErrProtocol, err)
				return
			}
			if whole {
				payload := m.Body
				if !m.Owned {
					payload = append([]byte(nil), payload...) // the reader's buffer is reused
				}
				c.pushEventDropOldest(&Event{Service: m.Service, Command: m.Command, Payload: payload, Seq: m.ID, Dropped: uint64(m.Aux)})
			}
		case pb.KindControl:
			if m, err := pb.DecodeControl(f); err == nil {
				reason = c.control(m, reason)
			}
		default:
			reason = fmt.Errorf("%w: frame kind %d from the node", ErrProtocol, f.Kind)
			return
		}
		if err != nil { // the connection is closing
			return
		}
	}
}

// control handles a control message from the node and returns the reason
// the connection will give when it ends.
func (c *Conn) control(msg *pb.Control, reason error) error {
	if g := msg.GetGoodbye(); g != nil {
		reason = goodbyeError(g)
	}
	return reason
}

// sendFrames, for the socket transport, sends the requests written to the
// local request ring over the socket, a batch per write.
func (c *Conn) sendFrames() {
	err := shm.SendFrames(sockWriter{c}, &c.sockMu, c.bridge.Bell(pb.BellSocketRequest), c.bridge.Consumer(pb.RingRequest))
	if err != nil {
		// watch reads the same socket: it sees the node's Goodbye, if
		// one came before the failure, or the end; let it tell why.
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-c.rc.sessDone:
		case <-t.C:
			c.end(nodeLost("socket write: " + err.Error()))
		}
	}
}

// sayGoodbye tells the node this client closes on purpose (best effort).
// With the socket transport no frame follows it (the node serves only
// what came before), and none goes after a write that failed, maybe
// halfway through a frame. The deadline is set before the lock: a frame
// write blocked on a node that does not read gives up too.
func (c *Conn) sayGoodbye() {
	if c.err() != nil {
		return
	}
	c.sock.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	if c.flush.sockBroken {
		return
	}
	c.flush.byeSent = true
	c.sock.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	pb.WriteControl(c.sock, &pb.Control{Msg: &pb.Control_ClientGoodbye{ClientGoodbye: &pb.ClientGoodbye{}}}, nil)
}

// Close closes the connection. It refuses new requests (ErrClosed), then
// waits, up to WithCloseTimeout (default 5 s), until the node has taken
// every message this client accepted (with the socket transport: until
// they are written to the socket, ahead of the goodbye, after which the
// node serves them); it does not wait for calls in flight. Then pending
// calls fail with ErrClosed, the node sees the client go, and every
// goroutine of the connection is waited for (WithDisconnectHandler's f
// too, unless it had begun). If accepted messages were not confirmed
// taken by the node, Close returns an *UnsentError with their count (also
// FlowControl.Unsent): an upper bound, as the node may still take some of
// them as the client lets go. It is idempotent: later calls return the
// first call's error.
func (c *Conn) Close() error {
	finalBegun := c.finalBegun.Load()
	c.closeOnce.Do(func() {
		c.flush.stopped.Store(true)
		cause := c.flushForClose()
		c.sayGoodbye()
		c.end(ErrClosed)
		c.sock.Close()
		c.wg.Wait()
		if t := c.handback.Load(); t != nil {
			t.Stop() // a handBack running now finds the connection closing
		}
		// Callers look at the rings under mapMu (a peek), rmu (replies),
		// evmu (events) or wmu (requests): once all are held, nobody does,
		// and closing keeps them away afterwards.
		c.mapMu.Lock()
		c.rmu.Lock()
		c.evmu.Lock()
		c.wmu.Lock()
		c.closed = true
		c.flush.closed.Store(true)
		c.settleUnsent(cause)
		c.link.Close()
		c.wmu.Unlock()
		c.evmu.Unlock()
		c.rmu.Unlock()
		c.mapMu.Unlock()
		c.emu.Lock()
		unix.Close(c.pollFd)
		c.pollFd = -1
		c.emu.Unlock()
	})
	if !finalBegun { // f may call Close: it must not wait for itself
		c.final.Wait()
	}
	return c.flush.closeErr
}
