package switchboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"
)

// DialOption configures Dial.
type DialOption func(*dialOptions) error

// Transport is how a connection's frames travel.
type Transport int

const (
	// TransportSHM: shared-memory rings in a sealed memfd (the default).
	TransportSHM Transport = iota
	// TransportSocket: the same frames over the Unix socket, for a client
	// that cannot map memory shared with the node.
	TransportSocket
)

type dialOptions struct {
	transport  Transport
	socket     string
	name       string
	rings      [3]uint32
	maxMessage uint32
	nodeUID    *uint32
	onEvent    func(Event)
	onRequest  func(context.Context, *PeerRequest) ([]byte, error)
	inline     bool
	requestSys *actor.ActorSystem
	requestPID *actor.PID
	actorSys   *actor.ActorSystem
	actorPID   *actor.PID
	eventQueue int
	spin       *time.Duration
}

// WithSocket sets the node's socket path (default DefaultSocketPath()).
func WithSocket(path string) DialOption {
	return func(o *dialOptions) error { o.socket = path; return nil }
}

// WithTransport chooses how frames travel (default TransportSHM).
func WithTransport(t Transport) DialOption {
	return func(o *dialOptions) error { o.transport = t; return nil }
}

// WithClientName names this client to the node (listings, logs).
func WithClientName(name string) DialOption {
	return func(o *dialOptions) error { o.name = name; return nil }
}

// WithRings asks for ring sizes in bytes (0 keeps the node's default); the
// node rounds them to powers of two within its limits.
func WithRings(request, response, event int) DialOption {
	return func(o *dialOptions) error {
		for _, n := range []int{request, response, event} {
			if n < 0 || n > math.MaxUint32 {
				return fmt.Errorf("switchboard: ring size %d out of range", n)
			}
		}
		o.rings = [3]uint32{uint32(request), uint32(response), uint32(event)}
		return nil
	}
}

// WithMaxMessageSize asks for a smaller message limit than the node's.
func WithMaxMessageSize(n int) DialOption {
	return func(o *dialOptions) error {
		if n <= 0 || n > math.MaxUint32 {
			return fmt.Errorf("switchboard: max message %d out of range", n)
		}
		o.maxMessage = uint32(n)
		return nil
	}
}

// WithNodeUID sets the uid the node's process must run as; the default
// accepts root and this process's own uid. A node running as anyone else
// is refused with ErrNotAuthentic before anything is sent to it.
func WithNodeUID(uid uint32) DialOption {
	return func(o *dialOptions) error { o.nodeUID = &uid; return nil }
}

// WithEventHandler delivers events to f, called in order on a goroutine of
// the connection's own. f must not call Close (Close waits for that
// goroutine): hand the Close to another goroutine.
func WithEventHandler(f func(Event)) DialOption {
	return func(o *dialOptions) error { o.onEvent = f; return nil }
}

// WithEventActor delivers each event as an *Event message to pid.
func WithEventActor(sys *actor.ActorSystem, pid *actor.PID) DialOption {
	return func(o *dialOptions) error { o.actorSys, o.actorPID = sys, pid; return nil }
}

// WithEventBuffer bounds the events held in this process before they are
// delivered (default 1024). When it is full the connection stops reading
// its event ring, and the node's queue and overflow policy take over.
func WithEventBuffer(n int) DialOption {
	return func(o *dialOptions) error {
		if n <= 0 {
			return errors.New("switchboard: event queue must hold at least one event")
		}
		o.eventQueue = n
		return nil
	}
}

// WithSpin sets how long waits spin before parking (see shm.WithSpin).
func WithSpin(d time.Duration) DialOption {
	return func(o *dialOptions) error { o.spin = &d; return nil }
}

// Event is an asynchronous message from the node.
type Event struct {
	Service, Command uint16
	Payload          []byte
	Seq              uint64 // the event's number on this connection
	Dropped          uint64 // events the node dropped just before this one

	// Bus messages (Service is BusService): what it is, the sender's
	// address ("" for the node), and where it was sent (an address, a
	// name, a group).
	Kind      EventKind
	From, To  string
	Monitored EventKind // for EventMonitor: the kind of the message copied

	rc     *Conn // a request's connection, for Reply
	handle [pb.ReplyHandleSize]byte

	pool *bufPool // the payload's buffer comes from this pool
	view *Conn    // the payload is in place in this connection's event ring
	gen  uint64   // which in-place event, for Release
}

// Release hands the event's payload buffer back for reuse by later events
// of the same size class, sparing the allocation and the cache misses of a
// fresh buffer (worth it for large events). The payload must not be used
// afterwards. Calling it is optional; call it at most once.
func (e Event) Release() {
	switch {
	case e.view != nil:
		e.view.releaseView(e.gen)
	case e.pool != nil:
		e.pool.put(e.Payload)
	}
}

// bufPool keeps a few large payload buffers for reuse.
type bufPool struct {
	mu   sync.Mutex
	free [][]byte
}

const (
	poolMin  = 4 << 10 // smaller payloads are cheap to allocate
	poolKeep = 64      // buffers kept at most
)

// get returns a buffer holding a copy of b: a pooled one if it fits.
func (p *bufPool) get(b []byte) []byte {
	if len(b) >= poolMin {
		p.mu.Lock()
		if n := len(p.free); n > 0 && cap(p.free[n-1]) >= len(b) {
			buf := p.free[n-1]
			p.free = p.free[:n-1]
			p.mu.Unlock()
			return append(buf[:0], b...)
		}
		p.mu.Unlock()
	}
	return append([]byte(nil), b...)
}

func (p *bufPool) put(b []byte) {
	if cap(b) < poolMin {
		return
	}
	p.mu.Lock()
	if len(p.free) < poolKeep {
		p.free = append(p.free, b[:0])
	}
	p.mu.Unlock()
}

// Conn is a client's connection to a node. It is safe for concurrent use.
type Conn struct {
	o       dialOptions
	sock    *net.UnixConn
	link    *shm.Link
	req     *shm.Producer
	resp    *shm.Consumer
	ev      *shm.Consumer
	bell    *shm.Doorbell
	welcome *pb.Welcome
	maxMsg  int

	wmu    sync.Mutex // request writers, one at a time (the ring has one producer)
	closed bool       // under wmu: the rings are unmapped
	sockMu sync.Mutex // frames written to the socket do not interleave
	bridge *shm.Link  // socket transport: the node's side of the local rings
	// sockEvents bounds the events held for the socket transport: what the
	// client's buffer, the node's queue and a full event ring of the
	// smallest frames would hold together with shared memory.
	sockEvents int

	rmu      sync.Mutex        // the response ring's reader: the pump, or a caller spinning for its reply
	rpartial map[uint64][]byte // under rmu: replies arriving in chunks
	spin     time.Duration     // how long one caller spins for its reply (0: never)
	spinning atomic.Bool       // a caller is spinning; the others block
	mapRefs  atomic.Int32      // callers about to look at the rings without a lock

	pmu     sync.Mutex
	pending map[uint64]*call
	goneErr error // under pmu: why the connection ended
	nextID  atomic.Uint64
	gone    chan struct{}

	emu    sync.Mutex
	equeue []Event
	ehead  int
	ewake  chan struct{}
	pollFd int
	polled atomic.Bool // Fd was called: keep pollFd readable while events wait
	evbufs bufPool

	evmu      sync.Mutex    // the event ring's reader: the pump, or RecvEventView
	evPartial []byte        // under evmu: an event arriving in chunks
	viewGen   atomic.Uint64 // bumped when an event is viewed in place and when it is released
	viewHeld  atomic.Bool   // an event is viewed in place: the pump leaves the event ring alone
	received  atomic.Uint64
	dropped   atomic.Uint64
	late      atomic.Uint64

	dmu  sync.Mutex
	data any

	reqq []*PeerRequest // under emu: requests waiting for the request handler

	inHandler     atomic.Bool // an inline request handler runs on the pump
	inlineMu      sync.Mutex
	inlineStarted chan struct{}   // closed when an inline handler starts, replaced when it ends
	life          context.Context // ends when the connection ends
	lifeCancel    context.CancelFunc

	internMu   sync.Mutex
	interned   [8]string
	internNext int
	rqwake     chan struct{}

	closing   atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type call struct {
	done    chan struct{}
	payload []byte
	code    pb.Code
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Dial connects to a node, checks that the node's process runs as the
// expected user, and sets up the connection's rings.
func Dial(ctx context.Context, opts ...DialOption) (*Conn, error) {
	o := dialOptions{eventQueue: 1024, name: "switchboard-go"}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.socket == "" {
		o.socket = DefaultSocketPath()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", o.socket)
	if err != nil {
		return nil, fmt.Errorf("switchboard: dial %s: %w", o.socket, err)
	}
	sock := nc.(*net.UnixConn)
	c, err := handshake(ctx, sock, o)
	if err != nil {
		sock.Close()
		return nil, err
	}
	return c, nil
}

func handshake(ctx context.Context, sock *net.UnixConn, o dialOptions) (*Conn, error) {
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
		Cpus: shm.CPUMask()}
	// A node that refuses us may do so, and close, before reading Hello: a
	// failed write still leaves its Refused to read.
	helloErr := writeControl(sock, &pb.Control{Msg: &pb.Control_Hello{Hello: hello}}, nil)
	hdr := make([]byte, shm.HeaderSize)
	n, fds, err := shm.RecvFds(sock, hdr, 8)
	if err != nil {
		if helloErr != nil {
			return nil, fmt.Errorf("switchboard: hello: %w", helloErr)
		}
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("switchboard: node closed the connection during the handshake: %w", ErrNodeGone)
		}
		return nil, fmt.Errorf("switchboard: handshake: %w", err)
	}
	closeFds := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if _, err := io.ReadFull(sock, hdr[n:]); err != nil {
		closeFds()
		return nil, fmt.Errorf("switchboard: handshake: %w", err)
	}
	msg, err := finishControl(sock, hdr)
	if err != nil {
		closeFds()
		return nil, fmt.Errorf("switchboard: handshake: %w", err)
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
		bridge, link, err = shm.NewLocalLink(clientLocalRings(sizes), shm.WithSpin(0))
		if err != nil {
			return nil, fmt.Errorf("switchboard: rings for the socket transport: %w", err)
		}
	} else {
		if link, err = shm.OpenLink(fds, shm.WithSpin(spin)); err != nil {
			return nil, fmt.Errorf("switchboard: shared memory from the node: %w", err)
		}
	}
	if bridge == nil && !clientLayout(link) {
		link.Close()
		return nil, codeError(pb.Code_CODE_PROTOCOL_VIOLATION, "unexpected ring layout")
	}
	sock.SetDeadline(time.Time{})
	pollFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		link.Close()
		return nil, err
	}
	c := &Conn{
		o: o, sock: sock, link: link, welcome: w, maxMsg: int(w.GetMaxMessageBytes()),
		req: link.Producer(pb.RingRequest), resp: link.Consumer(pb.RingResponse), ev: link.Consumer(pb.RingEvent),
		bell: link.Bell(pb.BellClient), pending: map[uint64]*call{}, gone: make(chan struct{}),
		rpartial: map[uint64][]byte{}, spin: spin, bridge: bridge,
		sockEvents: o.eventQueue + int(w.GetEventQueueLimit()) + int(w.GetEventRingBytes())/shm.FrameSize(0),
		ewake:      make(chan struct{}, 1), pollFd: pollFd, rqwake: make(chan struct{}, 1),
	}
	c.life, c.lifeCancel = context.WithCancel(context.Background())
	c.inlineStarted = make(chan struct{})
	if bridge != nil {
		c.spin = 0 // nothing to gain: the replies come from this process's own bridge
	}
	c.wg.Go(c.pump)
	c.wg.Go(c.watch)
	if bridge != nil {
		c.wg.Go(c.sendFrames)
	}
	if o.onEvent != nil || o.actorPID != nil {
		c.wg.Go(c.deliver)
	}
	if o.onRequest != nil || o.requestPID != nil {
		c.wg.Go(c.serveRequests)
	}
	return c, nil
}

// ID returns the connection id the node assigned.
func (c *Conn) ID() uint64 { return c.welcome.GetConnectionId() }

// Address returns the connection's unique address on the node.
func (c *Conn) Address() string { return c.welcome.GetAddress() }

// MaxMessage returns the negotiated largest message.
func (c *Conn) MaxMessage() int { return c.maxMsg }

// SetData stores the connection's private data (libqb's context).
func (c *Conn) SetData(v any) {
	c.dmu.Lock()
	c.data = v
	c.dmu.Unlock()
}

// Data returns what SetData stored.
func (c *Conn) Data() any {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.data
}

// Call sends a request to service and command and waits for the reply.
// ctx's deadline travels to the handler; cancelling ctx abandons the call
// (a late reply is discarded) and tells the node. If the node goes away
// the call fails with ErrNodeGone at once.
func (c *Conn) Call(ctx context.Context, service, command uint16, payload []byte) ([]byte, error) {
	id, cl, err := c.startCall(ctx, service, command, payload)
	if err != nil {
		return nil, err
	}
	c.lead(cl)
	return c.finishCall(ctx, id, cl)
}

// startCall registers a call and writes its request.
func (c *Conn) startCall(ctx context.Context, service, command uint16, payload []byte) (uint64, *call, error) {
	return c.startFrame(ctx, shm.Header{Kind: pb.KindCall, Service: service, Command: command}, nil, payload)
}

// startFrame registers a call and writes its frame: h with its ID and
// deadline filled in, and a body of prefix then payload.
func (c *Conn) startFrame(ctx context.Context, h shm.Header, prefix, payload []byte) (uint64, *call, error) {
	if len(prefix)+len(payload) > c.maxMsg {
		return 0, nil, codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", len(payload), c.maxMsg))
	}
	if dl, ok := ctx.Deadline(); ok {
		us := time.Until(dl).Microseconds()
		if us <= 0 {
			return 0, nil, context.DeadlineExceeded
		}
		h.Aux = uint32(min(us, math.MaxUint32))
	}
	id := c.nextID.Add(1)
	h.ID = id
	cl := callPool.Get().(*call)
	c.pmu.Lock()
	if err := c.goneErr; err != nil {
		c.pmu.Unlock()
		callPool.Put(cl)
		return 0, nil, err
	}
	c.pending[id] = cl
	c.pmu.Unlock()
	if err := c.writeParts(ctx, h, prefix, payload); err != nil {
		if c.forget(id) {
			callPool.Put(cl)
		}
		return 0, nil, err
	}
	return id, cl, nil
}

// finishCall waits for a call's reply.
func (c *Conn) finishCall(ctx context.Context, id uint64, cl *call) ([]byte, error) {
again:
	// With WithInlineRequests, an inline handler may hold the pump: while
	// it runs, callers read the replies themselves every 50 µs; otherwise
	// they wait to hear that one started.
	var started <-chan struct{}
	var poll <-chan time.Time
	if c.o.inline {
		c.inlineMu.Lock()
		started = c.inlineStarted
		c.inlineMu.Unlock()
		if c.inHandler.Load() {
			started, poll = nil, time.After(50*time.Microsecond)
		}
	}
	select {
	case <-started:
		goto again
	case <-poll:
		c.mapRefs.Add(1)
		if !c.closing.Load() && c.rmu.TryLock() {
			err := c.readResponses()
			c.rmu.Unlock()
			if err != nil {
				c.mapRefs.Add(-1)
				c.end(err)
				goto again
			}
		}
		c.mapRefs.Add(-1)
		goto again
	case <-cl.done:
		payload, code := cl.payload, cl.code
		cl.payload = nil
		callPool.Put(cl)
		if code != pb.Code_CODE_OK {
			return nil, replyError(code, string(payload))
		}
		return payload, nil
	case <-ctx.Done():
		if c.forget(id) {
			callPool.Put(cl)
			c.cancelCall(id)
		}
		return nil, ctx.Err()
	case <-c.gone:
		c.forget(id)
		return nil, c.err()
	}
}

// replyError turns a reply's code and text into the caller's error.
func replyError(code pb.Code, text string) error {
	switch code {
	case pb.Code_CODE_DEADLINE_EXCEEDED: // the handler saw the deadline first
		return context.DeadlineExceeded
	case pb.Code_CODE_CANCELED:
		return context.Canceled
	}
	return codeError(code, text)
}

// lead spins for a while reading the response ring itself, so that a reply
// that comes quickly reaches its caller without a wake-up of the pump and
// a goroutine switch. One caller at a time spins; the others block.
func (c *Conn) lead(cl *call) {
	if c.spin <= 0 || !c.spinning.CompareAndSwap(false, true) {
		return
	}
	defer c.spinning.Store(false)
	start := time.Now()
	for i := 1; len(cl.done) == 0; i++ {
		// Close unmaps only once closing is set and no caller counts in
		// mapRefs; the ring is read only under rmu, which Close takes too.
		c.mapRefs.Add(1)
		if c.closing.Load() {
			c.mapRefs.Add(-1)
			return
		}
		if c.resp.Unreleased() && c.rmu.TryLock() {
			err := c.readResponses()
			c.rmu.Unlock()
			if err != nil {
				c.mapRefs.Add(-1)
				c.end(err)
				return
			}
		}
		c.mapRefs.Add(-1)
		if i%64 == 0 && time.Since(start) > c.spin {
			return
		}
	}
}

// forget removes a pending call; false means a reply is being delivered.
func (c *Conn) forget(id uint64) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if _, ok := c.pending[id]; !ok {
		return false
	}
	delete(c.pending, id)
	return true
}

// cancelCall tells the node to cancel call id's context (best effort).
func (c *Conn) cancelCall(id uint64) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return
	}
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	c.sock.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	writeControl(c.sock, &pb.Control{Msg: &pb.Control_Cancel{Cancel: &pb.Cancel{Id: id}}}, nil)
	c.sock.SetWriteDeadline(time.Time{})
}

// Send sends a request without waiting for, or getting, a reply.
func (c *Conn) Send(ctx context.Context, service, command uint16, payload []byte) error {
	if len(payload) > c.maxMsg {
		return codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", len(payload), c.maxMsg))
	}
	if err := c.err(); err != nil {
		return err
	}
	return c.write(ctx, shm.Header{Kind: pb.KindSend, Service: service, Command: command, ID: c.nextID.Add(1)}, payload)
}

// write writes a request, in chunks if it is larger than a frame, waiting
// for room in the ring.
func (c *Conn) write(ctx context.Context, h shm.Header, payload []byte) error {
	return c.writeParts(ctx, h, nil, payload)
}

// writeParts writes a frame whose body is prefix then payload.
func (c *Conn) writeParts(ctx context.Context, h shm.Header, prefix, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return ErrClosed
	}
	max := c.req.MaxBody()
	var err error
	if len(prefix)+len(payload) <= max {
		err = c.req.Write(ctx, h, prefix, payload)
	} else {
		if len(prefix) > 0 {
			payload = append(append(make([]byte, 0, len(prefix)+len(payload)), prefix...), payload...)
		}
		for len(payload) > max && err == nil {
			h.Flags |= pb.FlagMore
			err = c.req.Write(ctx, h, payload[:max])
			payload = payload[max:]
		}
		if err == nil {
			h.Flags &^= pb.FlagMore
			err = c.req.Write(ctx, h, payload)
		}
	}
	if errors.Is(err, shm.ErrClosed) {
		return c.err()
	}
	return err
}

// err returns why the connection ended, or nil.
func (c *Conn) err() error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return c.goneErr
}

// end records why the connection ended, fails every pending call, and
// wakes every wait on the rings.
func (c *Conn) end(err error) {
	c.pmu.Lock()
	if c.goneErr != nil {
		c.pmu.Unlock()
		return
	}
	c.goneErr = err
	c.pending = map[uint64]*call{}
	close(c.gone)
	c.lifeCancel()
	c.pmu.Unlock()
	c.closing.Store(true)
	c.link.Shutdown()
	c.emu.Lock()
	select {
	case c.ewake <- struct{}{}:
	default:
	}
	c.emu.Unlock()
}

// watch reads frames from the socket; EOF means the node is gone. With
// the socket transport, replies and events go into the local rings.
func (c *Conn) watch() {
	reason := error(codeError(pb.Code_CODE_NODE_SHUTTING_DOWN, "the node closed the connection"))
	defer func() { c.end(reason) }()
	if c.bridge == nil {
		for {
			msg, err := readControl(c.sock)
			if err != nil {
				return
			}
			reason = c.control(msg, reason)
		}
	}
	resp := c.bridge.Producer(pb.RingResponse)
	maxFrame := resp.MaxBody()
	var evPartial []byte
	buf := make([]byte, 0, 64<<10)
	tmp := make([]byte, 64<<10)
	for {
		n, err := c.sock.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
		for {
			f, size, err := shm.DecodeFrame(buf, maxFrame)
			if errors.Is(err, shm.ErrIncomplete) {
				break
			}
			if err != nil {
				reason = fmt.Errorf("%w: %w", ErrProtocol, err)
				return
			}
			switch f.Kind {
			case pb.KindReply:
				err = resp.Write(context.Background(), f.Header, f.Body)
			case pb.KindEvent:
				// Events skip the local ring: a full ring must not stop this
				// loop, or the replies behind the events would wait too.
				evPartial = append(evPartial, f.Body...)
				if len(evPartial) > c.maxMsg+pb.MaxMsgOverhead {
					reason = fmt.Errorf("%w: event larger than the limit", ErrProtocol)
					return
				}
				if f.Flags&pb.FlagMore == 0 {
					c.pushEventDropOldest(Event{Service: f.Service, Command: f.Command, Payload: evPartial, Seq: f.ID, Dropped: uint64(f.Aux)})
					evPartial = nil
				}
			case pb.KindControl:
				var m pb.Control
				if gproto.Unmarshal(f.Body, &m) == nil {
					reason = c.control(&m, reason)
				}
			default:
				reason = fmt.Errorf("%w: frame kind %d from the node", ErrProtocol, f.Kind)
				return
			}
			if err != nil { // the connection is closing
				return
			}
			buf = buf[size:]
		}
		buf = append(buf[:0], buf...)
	}
}

// control handles a control message from the node and returns the reason
// the connection will give when it ends.
func (c *Conn) control(msg *pb.Control, reason error) error {
	if g := msg.GetGoodbye(); g != nil {
		reason = codeError(g.GetCode(), g.GetReason())
		if g.GetCode() != pb.Code_CODE_NODE_SHUTTING_DOWN {
			reason = fmt.Errorf("%w (%w)", ErrNodeGone, reason)
		}
	}
	return reason
}

// sendFrames, for the socket transport, sends the requests written to the
// local request ring over the socket, a batch per write.
func (c *Conn) sendFrames() {
	req := c.bridge.Consumer(pb.RingRequest)
	bell := c.bridge.Bell(clientBellRequestData)
	var buf []byte
	for {
		buf = shm.AppendFrames(buf[:0], 256<<10, req)
		if len(buf) > 0 {
			c.sockMu.Lock()
			_, err := c.sock.Write(buf)
			c.sockMu.Unlock()
			if err != nil {
				c.end(fmt.Errorf("%w: %w", ErrNodeGone, err))
				return
			}
			continue
		}
		req.Arm()
		err := bell.WaitUntil(context.Background(), req.Ready)
		req.Disarm()
		if err != nil {
			return
		}
	}
}

// The client's local rings for the socket transport, seen from the node's
// side (the bridge): unlike the node's layout, the bridge's two goroutines
// (socket to rings, rings to socket) each wait on a doorbell of their own.
const (
	clientBellRequestData = 0
	clientBellRingSpace   = 3
)

// clientLayout reports whether the node's segment has the ring layout of
// the protocol, doorbells included (connRings).
func clientLayout(l *shm.Link) bool {
	if l.NumRings() != 3 {
		return false
	}
	want := connRings([3]int{})
	for r := range 3 {
		got := l.Spec(r)
		if got.CreatorWrites != want[r].CreatorWrites || got.DataBell != want[r].DataBell || got.SpaceBell != want[r].SpaceBell {
			return false
		}
	}
	return true
}

func clientLocalRings(sizes [3]int) []shm.RingSpec {
	return []shm.RingSpec{
		pb.RingRequest:  {Capacity: sizes[0], DataBell: clientBellRequestData, SpaceBell: pb.BellRequestSpace},
		pb.RingResponse: {Capacity: sizes[1], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: clientBellRingSpace},
		pb.RingEvent:    {Capacity: sizes[2], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: clientBellRingSpace},
	}
}

// pump reads replies and events.
func (c *Conn) pump() {
	for !c.closing.Load() {
		c.rmu.Lock()
		err := c.readResponses()
		c.rmu.Unlock()
		if err == nil && c.evmu.TryLock() { // held by an event viewed in place: replies go on
			err = c.readEvents()
			c.evmu.Unlock()
		}
		if err != nil {
			c.end(err)
			return
		}
		if c.closing.Load() {
			return
		}
		c.rmu.Lock()
		c.resp.Arm()
		c.rmu.Unlock()
		room := c.eventRoom() && !c.viewHeld.Load()
		if room && c.evmu.TryLock() {
			c.ev.Arm()
			c.evmu.Unlock()
		}
		err = c.bell.WaitUntil(context.Background(), func() bool {
			// A wake-up consumes the announcement that caused it; a caller
			// spinning in lead may have taken the reply meanwhile, so
			// announce again before looking (else the next reply would
			// wait for WaitUntil's re-check).
			c.resp.Rearm()
			if room {
				c.ev.Rearm()
			}
			return c.closing.Load() || c.resp.Unreleased() ||
				(room && c.ev.Unreleased()) || (!room && c.eventRoom() && !c.viewHeld.Load())
		})
		c.resp.Disarm()
		c.ev.Disarm()
		if err != nil {
			if !errors.Is(err, shm.ErrClosed) {
				c.end(fmt.Errorf("%w: waiting for the node: %w", ErrProtocol, err))
			}
			return
		}
	}
}

// readEvents moves events from the event ring to the event queue while it
// has room. The caller holds evmu.
func (c *Conn) readEvents() error {
	defer c.ev.Release()
	for range 64 {
		if !c.eventRoom() {
			return nil
		}
		f, err := c.ev.Next()
		if err == shm.ErrRingEmpty {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: event ring: %w", ErrProtocol, err)
		}
		if err := c.queueEventFrame(f); err != nil {
			return err
		}
	}
	return nil
}

// queueEventFrame queues (a copy of) one event frame, reassembling chunks.
// The caller holds evmu.
func (c *Conn) queueEventFrame(f shm.Frame) error {
	if f.Kind != pb.KindEvent {
		return fmt.Errorf("%w: frame kind %d on the event ring", ErrProtocol, f.Kind)
	}
	if c.evPartial != nil || f.Flags&pb.FlagMore != 0 {
		c.evPartial = append(c.evPartial, f.Body...)
		if len(c.evPartial) > c.maxMsg+pb.MaxMsgOverhead {
			return fmt.Errorf("%w: event larger than the limit", ErrProtocol)
		}
		if f.Flags&pb.FlagMore == 0 {
			c.pushEvent(Event{Service: f.Service, Command: f.Command, Payload: c.evPartial, Seq: f.ID, Dropped: uint64(f.Aux)})
			c.evPartial = nil
		}
		return nil
	}
	c.pushEvent(Event{Service: f.Service, Command: f.Command, Payload: c.evbufs.get(f.Body), Seq: f.ID, Dropped: uint64(f.Aux), pool: &c.evbufs})
	return nil
}

// RecvEventView is RecvEvent without the copy, when it can: an event still
// in the event ring is returned in place, its Payload a view of shared
// memory, valid (and holding up the connection's other events) until the
// event's Release, which must then be called, before Close too. Events
// already queued in this process come first, as copies. Treat the bytes as
// untrusted.
func (c *Conn) RecvEventView(ctx context.Context) (Event, error) {
	start := time.Now()
	for i := 1; ; i++ {
		if e, ok, more := c.tryRecv(); ok {
			if more {
				c.passWake()
			}
			return e, nil
		}
		if c.evmu.TryLock() {
			e, ok, err := c.viewEvent()
			if ok {
				return e, nil // evmu stays held until e.Release
			}
			c.evmu.Unlock()
			if err != nil {
				c.end(err)
				return Event{}, err
			}
		}
		if i%64 != 0 || time.Since(start) < c.spin {
			continue // spin a while: the event may come before the pump wakes
		}
		select {
		case <-c.ewake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-c.gone:
			if e, ok := c.TryRecvEvent(); ok {
				return e, nil
			}
			return Event{}, c.err()
		}
	}
}

// viewEvent returns the next event in place if the queue is empty and the
// ring holds a whole one. The caller holds evmu, and keeps holding it when
// ok is true.
func (c *Conn) viewEvent() (Event, bool, error) {
	if c.closing.Load() {
		return Event{}, false, nil
	}
	c.emu.Lock()
	queued := len(c.equeue) > c.ehead
	c.emu.Unlock()
	if queued { // the pump got there first; keep the order
		return Event{}, false, nil
	}
	for {
		f, err := c.ev.Next()
		if err == shm.ErrRingEmpty {
			c.ev.Release()
			return Event{}, false, nil
		}
		if err != nil {
			c.ev.Release()
			return Event{}, false, fmt.Errorf("%w: event ring: %w", ErrProtocol, err)
		}
		// A bus request for the request handler is not an event to view;
		// every other single-frame event is viewed in place.
		takenRequest := f.Service == pb.BusService && f.Command == pb.MsgRequest && (c.o.onRequest != nil || c.o.requestPID != nil)
		if f.Kind == pb.KindEvent && c.evPartial == nil && f.Flags&pb.FlagMore == 0 && !takenRequest {
			e := Event{Service: f.Service, Command: f.Command, Payload: f.Body, Seq: f.ID, Dropped: uint64(f.Aux)}
			if f.Service == pb.BusService && c.busIntercept(&e) {
				c.dropped.Add(uint64(f.Aux)) // malformed: dropped, and counted by busIntercept
				continue
			}
			c.received.Add(1)
			c.dropped.Add(uint64(f.Aux))
			e.view, e.gen = c, c.viewGen.Add(1)
			c.viewHeld.Store(true)
			return e, true, nil
		}
		if err := c.queueEventFrame(f); err != nil { // a chunk or a bus message: into the queue
			c.ev.Release()
			return Event{}, false, err
		}
		c.emu.Lock()
		queued := len(c.equeue) > c.ehead
		c.emu.Unlock()
		if queued { // it comes first
			c.ev.Release()
			return Event{}, false, nil
		}
	}
}

// releaseView ends the in-place event gen, once.
func (c *Conn) releaseView(gen uint64) {
	if c.viewGen.CompareAndSwap(gen, gen+1) {
		c.ev.Release()
		c.viewHeld.Store(false)
		c.evmu.Unlock()
		c.bell.Ring() // the pump left the events alone meanwhile
	}
}

// readResponses delivers the replies waiting in the response ring. The
// caller holds rmu.
func (c *Conn) readResponses() error {
	defer c.resp.Release()
	for range 64 {
		f, err := c.resp.Next()
		if err == shm.ErrRingEmpty {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: response ring: %w", ErrProtocol, err)
		}
		if err := c.deliverReply(f); err != nil {
			return err
		}
	}
	return nil
}

// deliverReply hands a reply frame (a copy of it) to its caller. The
// caller of deliverReply holds rmu.
func (c *Conn) deliverReply(f shm.Frame) error {
	if f.Kind != pb.KindReply {
		return fmt.Errorf("%w: frame kind %d on the response ring", ErrProtocol, f.Kind)
	}
	if p, ok := c.rpartial[f.ID]; ok || f.Flags&pb.FlagMore != 0 {
		if !ok && len(c.rpartial) >= 64 {
			return fmt.Errorf("%w: too many chunked replies in flight", ErrProtocol)
		}
		p = append(p, f.Body...)
		if len(p) > c.maxMsg {
			return fmt.Errorf("%w: reply larger than the limit", ErrProtocol)
		}
		if f.Flags&pb.FlagMore != 0 {
			c.rpartial[f.ID] = p
			return nil
		}
		delete(c.rpartial, f.ID)
		c.reply(f.ID, pb.Code(f.Aux), p)
		return nil
	}
	c.reply(f.ID, pb.Code(f.Aux), append([]byte(nil), f.Body...))
	return nil
}

// Reply is the result of CallView.
type Reply struct {
	// Body is the reply's payload. When the caller found its reply in the
	// response ring itself, Body is a view of shared memory: valid until
	// Release, untrusted, and holding up every other reply of the
	// connection until then. Otherwise it is a copy.
	Body []byte
	c    *Conn
}

// Release gives the reply's memory back. Call it once, as soon as possible.
func (r *Reply) Release() {
	if r.c != nil {
		r.c.resp.Release()
		r.c.rmu.Unlock()
		r.c = nil
	}
	r.Body = nil
}

// CallView is Call with the reply read in place (coroipc's
// reply_receive_in_buf): when the reply comes while the caller is still
// spinning for it, the caller gets a view of the response ring instead of
// a copy, and must Release it, before Close too. Errors are as for Call.
func (c *Conn) CallView(ctx context.Context, service, command uint16, payload []byte) (*Reply, error) {
	id, cl, err := c.startCall(ctx, service, command, payload)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for i := 1; len(cl.done) == 0; i++ {
		if c.rmu.TryLock() {
			if c.closing.Load() {
				c.rmu.Unlock()
				break
			}
			f, found, err := c.findReply(id)
			if err != nil {
				c.resp.Release()
				c.rmu.Unlock()
				c.end(err)
				break
			}
			if found && c.forget(id) {
				callPool.Put(cl)
				if code := pb.Code(f.Aux); code != pb.Code_CODE_OK {
					text := string(f.Body)
					c.resp.Release()
					c.rmu.Unlock()
					return nil, replyError(code, text)
				}
				return &Reply{Body: f.Body, c: c}, nil
			}
			c.resp.Release()
			c.rmu.Unlock()
		}
		if i%64 == 0 && time.Since(start) > c.spin {
			break
		}
	}
	body, err := c.finishCall(ctx, id, cl)
	if err != nil {
		return nil, err
	}
	return &Reply{Body: body}, nil
}

// findReply reads the response ring up to the single-frame reply to call
// id, delivering the others, and returns it without releasing it. The
// caller holds rmu and releases the ring.
func (c *Conn) findReply(id uint64) (shm.Frame, bool, error) {
	for {
		f, err := c.resp.Next()
		if err == shm.ErrRingEmpty {
			return shm.Frame{}, false, nil
		}
		if err != nil {
			return shm.Frame{}, false, fmt.Errorf("%w: response ring: %w", ErrProtocol, err)
		}
		if f.Kind == pb.KindReply && f.ID == id && f.Flags&pb.FlagMore == 0 {
			if _, chunked := c.rpartial[id]; !chunked {
				return f, true, nil
			}
		}
		if err := c.deliverReply(f); err != nil {
			return shm.Frame{}, false, err
		}
	}
}

func (c *Conn) reply(id uint64, code pb.Code, payload []byte) {
	c.pmu.Lock()
	cl := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if cl == nil {
		c.late.Add(1) // the caller gave up
		return
	}
	cl.payload, cl.code = payload, code
	cl.done <- struct{}{}
}

func (c *Conn) eventRoom() bool {
	c.emu.Lock()
	defer c.emu.Unlock()
	return len(c.equeue)-c.ehead+len(c.reqq) < c.o.eventQueue
}

func (c *Conn) pushEvent(e Event) {
	c.dropped.Add(e.Dropped)
	if e.Service == pb.BusService && c.busIntercept(&e) {
		return
	}
	c.pushEventCounted(e)
}

// pushEventCounted queues e; its drops are already counted.
func (c *Conn) pushEventCounted(e Event) {
	c.received.Add(1)
	c.emu.Lock()
	if len(c.equeue) == c.ehead && c.polled.Load() && c.pollFd >= 0 {
		var one [8]byte
		one[0] = 1
		unix.Write(c.pollFd, one[:]) // readable while events wait
	}
	c.equeue = append(c.equeue, e)
	c.emu.Unlock()
	select {
	case c.ewake <- struct{}{}:
	default:
	}
}

// pushEventDropOldest queues an event received over the socket transport.
// The reader of the socket cannot wait for room, so past sockEvents the
// oldest queued event is dropped, and counted in the Dropped of the event
// after it, as the node counts its own drops.
func (c *Conn) pushEventDropOldest(e Event) {
	c.dropped.Add(e.Dropped) // the node's drops; carried counts below were counted already
	if e.Service == pb.BusService && c.busIntercept(&e) {
		return
	}
	c.emu.Lock()
	for len(c.equeue)-c.ehead >= c.sockEvents {
		old := c.equeue[c.ehead]
		c.equeue[c.ehead] = Event{}
		c.ehead++
		carry := 1 + old.Dropped
		if c.ehead < len(c.equeue) {
			c.equeue[c.ehead].Dropped += carry
		} else {
			e.Dropped += carry
			c.equeue, c.ehead = c.equeue[:0], 0
		}
		c.received.Add(^uint64(0)) // it was counted when queued
		c.dropped.Add(1)
		if old.Kind == EventRequest {
			// Its caller waits: tell it now rather than at its deadline.
			// (The socket reader, which runs this, must not block on the
			// request ring; a goroutine of the connection answers.)
			h := old.handle
			c.wg.Go(func() { c.replyPeer(h, nil, errRequestDropped) })
		}
	}
	c.emu.Unlock()
	c.pushEventCounted(e)
}

var errRequestDropped = errors.New("request dropped: the peer's event buffer was full")

// TryRecvEvent returns the next event if one is waiting (poll mode).
func (c *Conn) TryRecvEvent() (Event, bool) {
	e, ok, _ := c.tryRecv()
	return e, ok
}

// tryRecv is TryRecvEvent, also telling whether more events wait.
func (c *Conn) tryRecv() (Event, bool, bool) {
	c.emu.Lock()
	if len(c.equeue) == c.ehead {
		c.emu.Unlock()
		return Event{}, false, false
	}
	wasFull := len(c.equeue)-c.ehead >= c.o.eventQueue
	e := c.equeue[c.ehead]
	c.equeue[c.ehead] = Event{}
	c.ehead++
	if c.ehead == len(c.equeue) {
		c.equeue, c.ehead = c.equeue[:0], 0
		if c.polled.Load() && c.pollFd >= 0 {
			var b [8]byte
			unix.Read(c.pollFd, b[:]) // no more events: not readable
		}
	} else if c.ehead > 1024 && 2*c.ehead > len(c.equeue) {
		c.equeue = append(c.equeue[:0], c.equeue[c.ehead:]...)
		c.ehead = 0
	}
	more := len(c.equeue) > c.ehead
	c.emu.Unlock()
	if wasFull {
		c.bell.Ring() // the pump may have stopped reading events for lack of room
	}
	return e, true, more
}

// RecvEvent waits for the next event (poll mode).
func (c *Conn) RecvEvent(ctx context.Context) (Event, error) {
	for {
		if e, ok, more := c.tryRecv(); ok {
			if more {
				c.passWake()
			}
			return e, nil
		}
		select {
		case <-c.ewake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-c.gone:
			if e, ok := c.TryRecvEvent(); ok {
				return e, nil
			}
			return Event{}, c.err()
		}
	}
}

// passWake hands the wake-up on to another receiver while events remain:
// one token serves any number of waiting receivers.
func (c *Conn) passWake() {
	select {
	case c.ewake <- struct{}{}:
	default:
	}
}

// Fd returns a descriptor that polls readable while events wait to be
// taken with TryRecvEvent (poll mode), for a caller's own event loop. The
// descriptor is kept up to date from the first call of Fd on.
func (c *Conn) Fd() int {
	c.emu.Lock()
	defer c.emu.Unlock()
	if !c.polled.Swap(true) && len(c.equeue) > c.ehead && c.pollFd >= 0 {
		var one [8]byte
		one[0] = 1
		unix.Write(c.pollFd, one[:])
	}
	return c.pollFd
}

// deliver hands events to the handler or actor, in order.
func (c *Conn) deliver() {
	for {
		e, ok := c.TryRecvEvent()
		if !ok {
			select {
			case <-c.ewake:
				continue
			case <-c.gone:
				for e, ok := c.TryRecvEvent(); ok; e, ok = c.TryRecvEvent() {
					c.dispatch(e)
				}
				return
			}
		}
		c.dispatch(e)
	}
}

func (c *Conn) dispatch(e Event) {
	if c.o.onEvent != nil {
		c.o.onEvent(e)
		return
	}
	c.o.actorSys.Root.Send(c.o.actorPID, &e)
}

// FlowControl describes the connection's backlog.
type FlowControl struct {
	InFlight      int    // calls waiting for a reply
	EventsWaiting int    // events received and not yet taken
	EventsTotal   uint64 // events received
	EventsDropped uint64 // events the node dropped for this connection
	LateReplies   uint64 // replies that arrived after their call gave up
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
		EventsDropped: c.dropped.Load(), LateReplies: c.late.Load()}
}

// Close closes the connection: pending calls fail with ErrClosed, the
// node sees the client go, and every goroutine of the connection is waited
// for. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.sayGoodbye()
		c.end(ErrClosed)
		c.sock.Close()
		c.wg.Wait()
		for c.mapRefs.Load() != 0 { // a caller spinning on the ring sees closing and leaves
			runtime.Gosched()
		}
		// Writers (wmu) and callers reading replies (rmu) touch the rings
		// only under these locks: once both are held, nobody does.
		c.rmu.Lock()
		c.evmu.Lock()
		c.wmu.Lock()
		c.closed = true
		c.link.Close()
		c.wmu.Unlock()
		c.evmu.Unlock()
		c.rmu.Unlock()
		c.emu.Lock()
		unix.Close(c.pollFd)
		c.pollFd = -1
		c.emu.Unlock()
	})
	return nil
}
