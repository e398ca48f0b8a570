package conn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// Spawner spawns actors under a supervisor: the node spawns connections,
// groups and the registry as children of its root actor.
type Spawner interface {
	SpawnChild(props *actor.Props, name string) (*actor.PID, error)
}

// Host is what a connection needs from its node. The pump calls it; its
// methods run on the pump goroutine, one at a time.
type Host interface {
	// Serve serves a call or a send. It must not keep in.Payload unless
	// in.Owned; a Result with Pending set is completed later with
	// Endpoint.Complete.
	Serve(ctx context.Context, e *Endpoint, in *Incoming) Result
	// Route handles a bus frame from the client (a message, a publication,
	// a request to peers): it resolves the destination and hands the
	// message to e.Deliver or e.StartRequest, or answers e.Fail.
	Route(e *Endpoint, f BusFrame)
	// Closed runs once the pump has stopped, before the rings go.
	Closed(e *Endpoint, why Reason)
}

// Config describes a connection to start.
type Config struct {
	ID      uint64
	Address string
	Name    string // the client's name, from Hello
	Cred    shm.Cred
	Link    *shm.Link     // node side: reads RingRequest, writes RingResponse and RingEvent
	Sock    *net.UnixConn // control socket; EOF on it ends the connection
	// Announced, when set, is closed once the registry has announced the
	// connection: the pump serves none of its requests before, so that
	// everything the client does comes after its "connected" notice, in
	// every observer's order.
	Announced <-chan struct{}
	// Bridge, for the socket transport, is the other side of a local Link:
	// the connection's socket reader writes the client's frames into its
	// request ring, and a socket writer sends what the pump writes.
	Bridge *shm.Link
	// MaxPending bounds the replies from peers this connection waits for
	// (default 4096).
	MaxPending int
	// Transport names the transport for listings ("shm", "socket").
	Transport string
	// PeerContext: the client has FEATURE_PEER_CONTEXT. Its requests carry
	// their deadline, and it hears (MsgCancel) when their callers stop
	// waiting.
	PeerContext bool
	// DirectPeers: the client has FEATURE_DIRECT_PEERS (the node may hand
	// it direct peer channels, SendControl).
	DirectPeers bool

	MaxMessage int // largest reassembled message
	EventQueue int // events queued when the event ring is full
	EventBytes int // bytes queued when the event ring is full
	// EventWait is how long an event a handler sends itself
	// (SendEventFromServe, WriteEventFromServe) waits for room in a full
	// event ring, so that it is written into the ring rather than copied
	// into the queue (0: it never waits). The wait ends early when the
	// connection ends, and is not taken while the queue holds events.
	EventWait   time.Duration
	Overflow    OverflowPolicy
	Host        Host // serves the requests, routes the bus frames, hears of the end
	Logger      *slog.Logger
	ConnContext context.Context // parent of the connection's context
	Spin        time.Duration   // the pump's longest spin before it parks (shm.DefaultSpin when unset)
	SpinSet     bool
	// MaxActorCalls bounds the calls this connection has waiting for an
	// actor handler's Complete (default 1024); past it, a call is refused
	// with CODE_TOO_MANY_PENDING.
	MaxActorCalls int
	// Late, when set, counts for the node every reply discarded because
	// its caller had gone (see Stats.LateReplies).
	Late *atomic.Uint64
	// HandlerGrace is how long a connection that ended waits for a running
	// handler before it is released without it (default 20 ms).
	HandlerGrace time.Duration
	// CompleteUnknown writes the result of a Complete for a call that
	// Serve never saw, for tests that drive the actors directly; by
	// default such a result is discarded and counted late (its call's
	// context ended first, or it is a second Complete).
	CompleteUnknown bool
	// Stuck, when set, counts for the node the handlers still running for
	// connections released without them (see Lingering).
	Stuck *atomic.Int64
	// ObserveCall, when set, hears of every call (not send) this
	// connection served, as its reply is decided: the service, the time
	// from the frame's read to the result (an actor handler's included),
	// and the result's code. It runs on the pump and must be quick. Unset,
	// the pump reads no clock for it.
	ObserveCall func(service uint16, d time.Duration, code pb.Code)
	// Watcher, when set, reads the socket of a shared-memory connection
	// on its one goroutine instead of one of the connection's own.
	Watcher *SocketWatcher
	// ObservePeer, when set, hears of every request to peers (one peer or a
	// group) that StartRequest sent out, as it ends: answered, past its
	// deadline, cancelled, or its caller gone (CODE_CANCELED). Like
	// ObserveCall, on the pump.
	ObservePeer func(group bool, d time.Duration, code pb.Code)
}

// Endpoint is the node side of one connection.
type Endpoint struct {
	cfg  Config
	sys  *actor.ActorSystem
	pid  *actor.PID
	in   *shm.Consumer
	resp *shm.Producer
	ev   *shm.Producer
	bell *shm.Doorbell
	ctx  context.Context // ends when the connection ends
	// reading ends when nobody reads the event ring any more: the client
	// said goodbye, or the connection ended. A handler waiting for room
	// in the ring (send.go) waits on it.
	reading  context.Context
	stopRead context.CancelFunc
	cancel   context.CancelFunc

	qmu    sync.Mutex
	q      []func() // mailbox runs handed over by the dispatcher
	qn     atomic.Int32
	parked atomic.Bool  // the pump is parked or about to: Schedule must ring
	own    atomic.Int32 // who holds the pump's state: ownPump, ownLent, ownBorrowed (lend.go)
	nudged atomic.Bool  // a borrower's write was cut short: the pump wakes to publish it (lend.go)
	posted atomic.Int64 // messages posted to the actor and not yet handled (lend.go)

	// Pump state.
	chunks    pb.Reassembly // requests arriving in chunks
	backlog   eventQueue
	stopping  bool // Stopping received: stop serving requests
	announced bool // Config.Announced was seen closed (announce.go)
	stopped   bool // Stopped received: the pump exits
	asked     bool // the round routed a request or an answer: yield before the spin (run)
	why       Reason
	whyOnce   sync.Once
	byeOnce   sync.Once
	sockMu    sync.Mutex // frames written to the socket do not interleave

	cancels map[uint64]context.CancelFunc // call id -> its cancel, for Cancel frames; under cancelMu (a leaf lock)
	// A Cancel frame for a call not read yet is remembered (cancel.go):
	// cancelMu orders it against the start of the call.
	cancelMu sync.Mutex
	canceled map[uint64]struct{} // under cancelMu; bounded by maxCanceled
	saidBye  atomic.Bool
	byePos   atomic.Uint64 // the request ring's published end when the goodbye came (goodbye.go)
	byeTimer *time.Timer   // set by watch before clientLeft is sent: bounds the wait for byePos
	leaving  *Reason       // pump-only: the client left; end once byePos is served

	// Handlers (see linger.go).
	serving    atomic.Int32 // handlerIdle, handlerRunning, ...
	serveSvc   uint16       // the service and command of the running handler, for the log
	serveCmd   uint16
	actorCalls map[uint64]*actorCall // calls waiting for an actor handler's Complete (pump-only)
	released   chan struct{}         // closed once release has run
	lingering  chan struct{}         // closed once the pump's goroutine has returned
	// parts counts what Done waits for: watch, sendFrames (socket
	// transport), the reaper and the release. The last to end closes done,
	// so that no goroutine waits for them.
	parts atomic.Int32

	// With a SocketWatcher (sockwatch.go): the connection's token, its
	// socket's raw access, and the bytes of a control frame read in part
	// (the watcher's goroutine only).
	watchTok uint64
	sockRaw  syscall.RawConn
	partial  []byte

	bus busState

	stats        Stats
	queued       atomic.Int64 // events in the backlog (a gauge for Fill)
	pendingGauge atomic.Int64 // bus.pending, for Waiting
	actorGauge   atomic.Int64 // len(actorCalls), for ActorCalls
	inbox        atomic.Int64 // events sent through the mailbox and not yet received
	inboxBytes   atomic.Int64 // their payload bytes
	mailboxLimit int64        // bounds of inbox and inboxBytes (admit)
	mailboxBytes int64
	lateDrops    atomic.Uint64 // events dropped before the mailbox, not yet in a gap count
	spinner      *shm.Spinner
	readyFn      func() bool
	parkReadyFn  func() bool
	lentReadyFn  func() bool
	conds        [2]shm.Cond // park's, kept to spare an allocation
	parker       *shm.Parker
	done         chan struct{}
	started      time.Time
	ringCap      [3]int
	welcomed     chan struct{} // closed once Welcome is on the socket

	mapMu    sync.RWMutex // Fill reads the rings under it; release unmaps under it
	unmapped bool
}

// Stats are the connection's counters.
type Stats struct {
	Calls, Sends, Replies, Events, EventsDropped, Panics, Violations atomic.Uint64
	BytesIn, BytesOut                                                atomic.Uint64
	// LateReplies counts the replies dropped on this connection's
	// account because their caller had gone: results of its calls after
	// it ended, actor answers after their call was forgotten, and answers
	// it gave peers that had given up.
	LateReplies atomic.Uint64
	// ByeSkipped counts the calls a client wrote before its goodbye that
	// were not served: the client had already failed them (goodbye.go).
	ByeSkipped atomic.Uint64
	// ByeUnserved counts the frames a client wrote before it left (its
	// goodbye; with the socket transport, its socket's end) that were not
	// served: the goodbye's drain limit or a stuck handler ended the
	// connection first (goodbye.go).
	ByeUnserved atomic.Uint64
	// EventWaits counts the times a handler's event waited for room in
	// the event ring (EventWait); EventWaitsExpired, those whose wait
	// ended before the room came (the event then took the queue's path).
	EventWaits, EventWaitsExpired atomic.Uint64
	// InPlace counts the events and replies written by another goroutine
	// while the pump slept (lend.go), through no mailbox and without
	// waking it.
	InPlace atomic.Uint64
}

// OverflowPolicy is what happens when a client's event queue is full.
type OverflowPolicy int

const (
	DropOldest OverflowPolicy = iota // drop the oldest queued event and count it
	Disconnect                       // disconnect the client as a slow consumer
)

// Start creates the connection's actor as a child of sp's supervisor and
// starts the connection's goroutines.
func Start(sys *actor.ActorSystem, cfg Config, sp Spawner) (*Endpoint, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	parent := cfg.ConnContext
	if parent == nil {
		parent = context.Background()
	}
	c := &Endpoint{
		cfg:       cfg,
		sys:       sys,
		in:        cfg.Link.Consumer(pb.RingRequest),
		resp:      cfg.Link.Producer(pb.RingResponse),
		ev:        cfg.Link.Producer(pb.RingEvent),
		bell:      cfg.Link.Bell(pb.BellNode),
		done:      make(chan struct{}),
		started:   time.Now(),
		welcomed:  make(chan struct{}),
		released:  make(chan struct{}),
		lingering: make(chan struct{}),
	}
	if cfg.MaxActorCalls <= 0 {
		c.cfg.MaxActorCalls = 1024
	}
	if cfg.HandlerGrace <= 0 {
		c.cfg.HandlerGrace = defaultReapGrace
	}
	if c.in == nil || c.resp == nil || c.ev == nil {
		return nil, errors.New("conn: link is not a node-side connection link")
	}
	c.ringCap = [3]int{c.in.Capacity(), c.resp.Capacity(), c.ev.Capacity()}
	// Bus frames carry a destination, peer replies a handle, on top of
	// the message: the limit is the protocol's overhead more (checked
	// against the message alone in frame).
	c.chunks = pb.Reassembly{MaxInFlight: 64, MaxSize: cfg.MaxMessage + pb.MaxMsgOverhead}
	c.backlog.limit, c.backlog.byteLimit = cfg.EventQueue, cfg.EventBytes
	// The mailbox holds at most what the event ring (of the smallest
	// frames) and the event queue could hold together.
	c.mailboxLimit = int64(cfg.EventQueue + c.ringCap[2]/shm.FrameSize(0))
	c.mailboxBytes = int64(cfg.EventBytes + c.ringCap[2])
	spin := shm.DefaultSpin()
	if cfg.SpinSet {
		spin = cfg.Spin
	}
	c.spinner = shm.NewSpinner(spin)
	c.parker = shm.NewParker(c.bell)
	c.readyFn, c.parkReadyFn, c.lentReadyFn = c.readyToRun, c.parkReady, c.lentReady
	c.ctx, c.cancel = context.WithCancel(parent)
	c.reading, c.stopRead = context.WithCancel(c.ctx)
	props := actor.PropsFromProducer(func() actor.Actor { return (*connActor)(c) },
		actor.WithDispatcher(pumpDispatcher{c}), actor.WithMailbox(c.newMailbox))
	pid, err := sp.SpawnChild(props, fmt.Sprintf("conn-%d", cfg.ID))
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.pid = pid
	// Done waits for watch, sendFrames, the reaper and release, not for
	// the pump's goroutine itself: abandoned in a handler that ignores
	// its context, that one ends when the handler returns (Lingering).
	c.parts.Store(3) // watch, the reaper, the release
	if cfg.Bridge != nil {
		c.parts.Add(1)
		go func() {
			c.sendFrames()
			c.partDone()
		}()
	}
	if cfg.Watcher == nil || cfg.Bridge != nil || cfg.Watcher.add(c) != nil {
		go func() {
			c.watch()
			c.partDone()
		}()
	}
	// The reaper runs when the context ends, which release makes sure of.
	context.AfterFunc(c.ctx, func() {
		c.reap()
		c.partDone()
	})
	go c.pump()
	return c, nil
}

// PID returns the connection's actor.
func (c *Endpoint) PID() *actor.PID { return c.pid }

// ID returns the connection id.
func (c *Endpoint) ID() uint64 { return c.cfg.ID }

// Address returns the connection's unique address.
func (c *Endpoint) Address() string { return c.cfg.Address }

// Name returns the client's name.
func (c *Endpoint) Name() string { return c.cfg.Name }

// Cred returns the client's kernel-checked credentials.
func (c *Endpoint) Cred() shm.Cred { return c.cfg.Cred }

// Member describes the connection in notices and member lists.
func (c *Endpoint) Member() *pb.Member {
	cr := c.cfg.Cred
	return &pb.Member{Address: c.cfg.Address, ClientName: c.cfg.Name, Uid: cr.UID, Gid: cr.GID, Pid: cr.PID}
}

// Transport names the connection's transport ("shm" or "socket").
func (c *Endpoint) Transport() string { return c.cfg.Transport }

// RingBytes returns the capacities of the request, response and event
// rings.
func (c *Endpoint) RingBytes() [3]int {
	return [3]int{c.ringCap[0], c.ringCap[1], c.ringCap[2]}
}

// Since returns when the connection started.
func (c *Endpoint) Since() time.Time { return c.started }

// Fill returns the bytes waiting in the connection's request, response
// and event rings, and how many events the node holds for the client
// short of its event ring: in the queue behind the ring and in the
// connection actor's mailbox, not yet taken by its pump. Any goroutine
// may call it; after the connection is released it returns zeros.
func (c *Endpoint) Fill() (request, response, event, queued int) {
	c.mapMu.RLock()
	defer c.mapMu.RUnlock()
	if c.unmapped {
		return 0, 0, 0, 0
	}
	return c.in.Fill(), c.resp.Fill(), c.ev.Fill(), int(c.queued.Load() + c.inbox.Load())
}

// Stats returns the connection's counters.
func (c *Endpoint) Stats() *Stats { return &c.stats }

// Context ends when the connection ends.
func (c *Endpoint) Context() context.Context { return c.ctx }

// Done is closed when the connection is fully released: its end
// announced, its socket closed, its shared memory given back. A handler
// that ignored its context may still run (see Lingering).
func (c *Endpoint) Done() <-chan struct{} { return c.done }

// Reason says why a connection ended.
type Reason struct {
	Code pb.Code // CODE_OK for a client that closed, else why
	Text string
	Lost bool // CODE_OK: the socket closed without the client's goodbye
}

// Disconnect maps why a connection ended to the reason its disconnection
// is announced with.
func (r Reason) Disconnect() pb.DisconnectReason {
	switch r.Code {
	case pb.Code_CODE_OK:
		if r.Lost {
			return pb.DisconnectReason_DISCONNECT_LOST
		}
		return pb.DisconnectReason_DISCONNECT_CLOSED
	case pb.Code_CODE_SLOW_CONSUMER:
		return pb.DisconnectReason_DISCONNECT_EVICTED
	case pb.Code_CODE_PROTOCOL_VIOLATION:
		return pb.DisconnectReason_DISCONNECT_VIOLATION
	case pb.Code_CODE_NODE_SHUTTING_DOWN:
		return pb.DisconnectReason_DISCONNECT_SHUTDOWN
	}
	return pb.DisconnectReason_DISCONNECT_UNSPECIFIED
}

// Why returns why the connection ended. Call it only once the connection's
// actor has stopped (its watchers got Terminated), when it is settled.
func (c *Endpoint) Why() Reason { return c.why }

// Close says goodbye to the client with why, cancels the context of the
// request being served, and stops the connection. It does not wait; use
// Done.
func (c *Endpoint) Close(why Reason) {
	c.sayGoodbye(why)
	c.end(why)
}

// end records the first reason the connection ends and starts the stop.
func (c *Endpoint) end(why Reason) {
	c.whyOnce.Do(func() {
		c.why = why
		c.cancel()
		c.sys.Root.Stop(c.pid)
	})
}

// Welcome runs write, which writes the handshake's Welcome on the
// connection's socket, before anything else the connection writes there
// (the socket transport's frames wait for it), and while the link's
// descriptors are still open.
func (c *Endpoint) Welcome(write func() error) error {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	defer close(c.welcomed)
	return write()
}

// sayGoodbye sends a Goodbye control frame on the socket, once, best
// effort. Any goroutine may call it.
func (c *Endpoint) sayGoodbye(why Reason) {
	c.byeOnce.Do(func() {
		// Before the lock: a write blocked on a client that does not read
		// (sendFrames) gives up too, instead of holding the lock forever.
		c.cfg.Sock.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		c.sockMu.Lock()
		defer c.sockMu.Unlock()
		pb.WriteControl(c.cfg.Sock, &pb.Control{Msg: &pb.Control_Goodbye{Goodbye: &pb.Goodbye{Code: why.Code, Reason: why.Text}}}, nil)
	})
}

// watch reads frames from the socket until it fails: EOF means the client
// is gone. Control frames are handled here; with the socket transport the
// others go into the request ring.
func (c *Endpoint) watch() {
	maxFrame := pb.MaxControl
	var req *shm.Producer
	if c.cfg.Bridge != nil {
		req = c.cfg.Bridge.Producer(pb.RingRequest)
		maxFrame = req.MaxBody()
	}
	fr, err := shm.NewSocketFrameReader(c.cfg.Sock, maxFrame)
	if err != nil {
		c.end(Reason{Code: pb.Code_CODE_INTERNAL, Text: "socket: " + err.Error()})
		return
	}
	for {
		f, err := fr.Next()
		switch {
		case errors.Is(err, shm.ErrCorrupt):
			c.end(Reason{Code: pb.Code_CODE_PROTOCOL_VIOLATION, Text: "bad frame on the socket"})
			c.cfg.Sock.CloseRead()
			return
		case err != nil:
			c.sockEnded()
			return
		case f.Kind != pb.KindControl && req != nil:
			if err := req.Write(c.ctx, f.Header, f.Body); err != nil {
				return // the connection is ending
			}
			continue
		case f.Kind != pb.KindControl:
			c.end(Reason{Code: pb.Code_CODE_PROTOCOL_VIOLATION, Text: "bad frame on the socket"})
			c.cfg.Sock.CloseRead()
			return
		}
		c.controlFrame(f)
	}
}

// sockEnded: the client closed its socket (or it failed).
func (c *Endpoint) sockEnded() {
	lost := Reason{Code: pb.Code_CODE_OK, Text: "client lost: socket closed without goodbye", Lost: true}
	switch {
	case c.saidBye.Load(): // after the requests it wrote before its goodbye
		c.leave(Reason{Code: pb.Code_CODE_OK, Text: "client closed the connection"})
	case c.cfg.Bridge != nil:
		// With the socket transport the frames that came whole before the
		// end are served as after a goodbye: the client counted them
		// handed over. (A Close that gave up on a node slow to read cut
		// its last write short, and could not say goodbye after it.)
		c.heardGoodbye()
		c.leave(lost)
	default:
		c.end(lost)
	}
}

// controlFrame handles a control frame from the client's socket.
func (c *Endpoint) controlFrame(f shm.Frame) {
	m, err := pb.DecodeControl(f)
	if err != nil {
		return
	}
	if cm := m.GetCancel(); cm != nil {
		c.cancelFrame(cm.GetId())
	}
	if m.GetClientGoodbye() != nil {
		c.heardGoodbye()
	}
}

// sendFrames, for the socket transport, sends what the pump writes to the
// response and event rings over the socket, a batch per write.
func (c *Endpoint) sendFrames() {
	select { // nothing goes on the socket before the handshake's Welcome
	case <-c.welcomed:
	case <-c.ctx.Done():
		return
	}
	br := c.cfg.Bridge
	err := shm.SendFrames(c.cfg.Sock, &c.sockMu, br.Bell(pb.BellClient), br.Consumer(pb.RingResponse), br.Consumer(pb.RingEvent))
	if err != nil {
		// A client that said goodbye and closed its socket does not read
		// any more: its connection ends when the requests it wrote before
		// the goodbye are served (goodbye.go), not at this failure. Its
		// goodbye may still be on its way to watch: wait a little for it.
		for range 200 {
			if c.saidBye.Load() || c.ctx.Err() != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		c.end(Reason{Code: pb.Code_CODE_OK, Text: "socket write: " + err.Error()})
	}
}

// release runs once the pump has stopped.
func (c *Endpoint) release() {
	c.countUnserved()
	c.dropActorCalls() // before the cancel, which would run their AfterFuncs
	c.cancel()
	c.failIncoming()
	c.abandonCalls()
	c.cfg.Host.Closed(c, c.why)
	// A write blocked on a client that does not read (sendFrames, a
	// goodbye) fails now, so that the lock below comes; the lock keeps
	// the close from overtaking a Welcome still being written with the
	// link's descriptors.
	c.cfg.Sock.SetWriteDeadline(time.Now())
	if c.sockRaw != nil && c.cfg.Watcher.forget(c) {
		c.partDone() // the watcher's part, as watch's return would be
	}
	c.sockMu.Lock()
	c.cfg.Sock.Close() // ends watch
	c.sockMu.Unlock()
	c.mapMu.Lock()
	c.unmapped = true
	c.mapMu.Unlock()
	if c.Abandoned() {
		// The abandoned handler may still read its request from the ring:
		// the shared memory goes now, the mapping when it returns.
		if err := c.cfg.Link.Retire(); err != nil {
			c.cfg.Logger.Error("retiring the rings of a released connection", slog.Uint64("conn", c.cfg.ID), slog.Any("err", err))
		}
	} else {
		c.cfg.Link.Close() // for a local link, also wakes sendFrames, which then ends
	}
	close(c.released)
	c.partDone()
}

// partDone says one of what Done waits for has ended; the last closes
// done.
func (c *Endpoint) partDone() {
	if c.parts.Add(-1) == 0 {
		close(c.done)
	}
}
