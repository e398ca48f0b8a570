package switchboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/group"
	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	gproto "google.golang.org/protobuf/proto"
)

// Version is the version of this module's node and client.
const Version = "0.1.0-dev"

// SystemService is the service id of the node's built-in service, served
// by every node: SysPing answers an empty reply, SysEcho returns the
// payload, SysInfo returns a NodeInfo protobuf message.
const (
	SystemService uint16 = 0xFFFF
	SysPing       uint16 = 1
	SysEcho       uint16 = 2
	SysInfo       uint16 = 3
)

// DefaultSocketPath returns where a node listens and a client connects by
// default: $SWITCHBOARD_SOCKET if set, /run/switchboard/node.sock as root,
// else $XDG_RUNTIME_DIR/switchboard/node.sock (or a per-user directory
// under the system temp dir when XDG_RUNTIME_DIR is unset).
func DefaultSocketPath() string {
	if p := os.Getenv("SWITCHBOARD_SOCKET"); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return "/run/switchboard/node.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "switchboard", "node.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("switchboard-%d", os.Geteuid()), "node.sock")
}

// NodeOption configures a Node.
type NodeOption func(*nodeOptions) error

type nodeOptions struct {
	socket           string
	name             string
	logger           *slog.Logger
	authorize        func(Cred) error
	maxMessage       int
	rings            [3]int
	eventQueue       int
	eventBytes       int
	overflow         conn.OverflowPolicy
	handshakeTimeout time.Duration
	selector         func(service, command uint16) Handler
	spin             *time.Duration
	policy           Policy
	listener         *net.UnixListener
	maxPending       int
}

// WithSocketPath sets the Unix socket the node listens on.
func WithSocketPath(path string) NodeOption {
	return func(o *nodeOptions) error { o.socket = path; return nil }
}

// WithNodeName names the node (Welcome, NodeInfo, addresses).
func WithNodeName(name string) NodeOption {
	return func(o *nodeOptions) error {
		if len(name) == 0 || len(name) > 64 || strings.ContainsAny(name, ". :\t\n") {
			return fmt.Errorf("switchboard: node name %q: 1 to 64 bytes, without '.', ':' or spaces", name)
		}
		o.name = name
		return nil
	}
}

// WithLogger sets the node's logger; protoactor's own logs go to it too.
// The default discards everything.
func WithLogger(l *slog.Logger) NodeOption {
	return func(o *nodeOptions) error { o.logger = l; return nil }
}

// WithAuthorize decides whether a connecting process may use the node,
// from its kernel-checked credentials; an error refuses it with the
// error's text. The default admits root and the node's own uid.
func WithAuthorize(f func(Cred) error) NodeOption {
	return func(o *nodeOptions) error { o.authorize = f; return nil }
}

// WithMaxMessage sets the largest message, in bytes, a connection may send
// or receive (default 16 MiB). Messages larger than a ring frame are
// chunked.
func WithMaxMessage(n int) NodeOption {
	return func(o *nodeOptions) error {
		if n <= 0 || n > 1<<30 {
			return fmt.Errorf("switchboard: max message %d out of range", n)
		}
		o.maxMessage = n
		return nil
	}
}

// WithRingSizes sets the default request, response and event ring sizes
// (powers of two; default 1 MiB each). A client may ask for others.
func WithRingSizes(request, response, event int) NodeOption {
	return func(o *nodeOptions) error {
		for _, n := range []int{request, response, event} {
			if n < shm.MinRingCapacity || n > shm.MaxRingCapacity || bits.OnesCount(uint(n)) != 1 {
				return fmt.Errorf("switchboard: ring size %d is not a power of two in [%d, %d]", n, shm.MinRingCapacity, shm.MaxRingCapacity)
			}
		}
		o.rings = [3]int{request, response, event}
		return nil
	}
}

// OverflowPolicy says what happens to events for a client that does not
// read them fast enough, once its queue in the node is full.
type OverflowPolicy = conn.OverflowPolicy

const (
	// DropOldest drops the oldest queued event; the client sees the number
	// dropped with its next event (Event.Dropped).
	DropOldest = conn.DropOldest
	// DisconnectSlow disconnects the client as a slow consumer.
	DisconnectSlow = conn.Disconnect
)

// WithEventQueue bounds the events the node queues for one client whose
// event ring is full (default 1024 events or 4 MiB), and sets the policy
// past that bound.
func WithEventQueue(events, bytes int, policy OverflowPolicy) NodeOption {
	return func(o *nodeOptions) error {
		if events < 0 || bytes < 0 {
			return errors.New("switchboard: negative event queue bound")
		}
		o.eventQueue, o.eventBytes, o.overflow = events, bytes, policy
		return nil
	}
}

// WithHandshakeTimeout bounds how long a connecting client may take to say
// Hello (default 2s).
func WithHandshakeTimeout(d time.Duration) NodeOption {
	return func(o *nodeOptions) error { o.handshakeTimeout = d; return nil }
}

// WithSelector picks the handler for a service that Handle did not
// register (coroipc's user-defined selector); nil means unknown service.
func WithSelector(f func(service, command uint16) Handler) NodeOption {
	return func(o *nodeOptions) error { o.selector = f; return nil }
}

// WithListener makes the node serve on ln, a listener it did not create
// (systemd socket activation, a test): Listen then uses ln instead of
// creating the socket, and Close closes ln but leaves its path alone
// unless ln unlinks on close.
func WithListener(ln *net.UnixListener) NodeOption {
	return func(o *nodeOptions) error {
		if ln == nil {
			return errors.New("switchboard: nil listener")
		}
		o.listener = ln
		if a, ok := ln.Addr().(*net.UnixAddr); ok && o.socket == "" {
			o.socket = a.Name
		}
		return nil
	}
}

// WithNodeSpin sets how long the node's pumps spin before parking (see
// shm.WithSpin); the default spins only when a core is to spare.
func WithNodeSpin(d time.Duration) NodeOption {
	return func(o *nodeOptions) error { o.spin = &d; return nil }
}

// Node serves connections. Create it with NewNode, register services with
// Handle, then Listen and Serve (or ListenAndServe); Close stops it.
type Node struct {
	o        nodeOptions
	sys      *actor.ActorSystem
	root     *actor.PID
	registry *actor.PID // the table of live connections
	services [1 << 16]atomic.Pointer[service]
	started  time.Time

	mu     sync.Mutex
	ln     *net.UnixListener
	conns  map[uint64]*conn.Endpoint
	nextID uint64
	hs     map[*net.UnixConn]struct{} // handshakes in progress
	closed bool

	wg        sync.WaitGroup // accept loop and handshakes
	closeOnce sync.Once
	closeErr  error

	calls, events atomic.Uint64
	policy        atomic.Pointer[policyBox]
	refused       atomic.Uint64 // handshakes refused by authorization or policy
	accepted      atomic.Uint64
	violations    atomic.Uint64 // totals of closed connections' counters, plus live ones at Stats
	evictions     atomic.Uint64
	dropped       atomic.Uint64
	published     atomic.Uint64
	delivered     atomic.Uint64
	undeliverable atomic.Uint64

	dir   *group.Dir
	names atomic.Pointer[map[string]*conn.Endpoint]
	byID  sync.Map // connection id → *conn.Endpoint, for the bus

	bg sync.WaitGroup // listings answered off a connection's pump; Close waits for them

	monMu    sync.Mutex // writers of monitors
	monitors atomic.Pointer[[]monitor]
}

// NewNode returns a node configured by opts. It does not listen yet.
func NewNode(opts ...NodeOption) (*Node, error) {
	o := nodeOptions{
		name:             "n1",
		maxMessage:       16 << 20,
		rings:            [3]int{1 << 20, 1 << 20, 1 << 20},
		eventQueue:       1024,
		eventBytes:       4 << 20,
		handshakeTimeout: 2 * time.Second,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.socket == "" {
		o.socket = DefaultSocketPath()
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.authorize == nil {
		uid := uint32(os.Geteuid())
		o.authorize = func(c Cred) error {
			if c.UID == 0 || c.UID == uid {
				return nil
			}
			return fmt.Errorf("uid %d may not connect", c.UID)
		}
	}
	// protoactor logs routine lines at Info ("actor system started", one per
	// recovered panic); keep only its warnings and errors.
	lg := slog.New(minLevel{o.logger.Handler(), slog.LevelWarn}).With(slog.String("lib", "protoactor"))
	n := &Node{
		o:       o,
		sys:     actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return lg })),
		conns:   map[uint64]*conn.Endpoint{},
		hs:      map[*net.UnixConn]struct{}{},
		started: time.Now(),
	}
	root, err := n.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &rootActor{n} },
		actor.WithSupervisor(actor.NewOneForOneStrategy(0, 0, func(reason any) actor.Directive {
			n.o.logger.Error("connection actor failed; stopping it", slog.Any("reason", reason))
			return actor.StopDirective
		}))), "node")
	if err != nil {
		return nil, err
	}
	n.root = root
	n.SetPolicy(o.policy)
	rc, gc := n.initBus()
	n.dir = group.NewDir(gc)
	if n.registry, err = n.spawn(actor.PropsFromProducer(registry.New(rc)), "registry"); err != nil {
		n.sys.Root.StopFuture(root).Wait()
		return nil, err
	}
	n.Handle(SystemService, HandlerFunc(n.serveSystem))
	return n, nil
}

// Handle registers h for service id, replacing any earlier handler.
func (n *Node) Handle(id uint16, h Handler, opts ...ServiceOption) {
	s := &service{id: id, h: h}
	for _, opt := range opts {
		opt(s)
	}
	n.services[id].Store(s)
}

// HandleFunc registers f for service id.
func (n *Node) HandleFunc(id uint16, f func(ctx context.Context, r *Request) ([]byte, error), opts ...ServiceOption) {
	n.Handle(id, HandlerFunc(f), opts...)
}

// HandleActor makes the actor pid serve service id: each request arrives as
// an *ActorRequest, which the actor answers with Respond.
func (n *Node) HandleActor(id uint16, pid *actor.PID, opts ...ServiceOption) {
	s := &service{id: id, pid: pid}
	for _, opt := range opts {
		opt(s)
	}
	n.services[id].Store(s)
}

// ActorSystem returns the node's actor system, for actors that serve
// services or send events.
func (n *Node) ActorSystem() *actor.ActorSystem { return n.sys }

// SocketPath returns the path the node listens on.
func (n *Node) SocketPath() string { return n.o.socket }

// Listen creates the node's socket: its directory is created 0750; a
// socket left by a dead node is replaced, a live node's is not.
func (n *Node) Listen() error {
	if n.o.listener != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed {
			return ErrClosed
		}
		n.ln = n.o.listener
		return nil
	}
	path := n.o.socket
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("switchboard: socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("switchboard: another node serves %s", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("switchboard: removing stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("switchboard: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		ln.Close()
		return ErrClosed
	}
	n.ln = ln
	return nil
}

// Serve accepts connections until ctx ends or Close is called; then it
// closes the node and returns nil (or the accept error that stopped it).
func (n *Node) Serve(ctx context.Context) error {
	n.mu.Lock()
	ln := n.ln
	n.mu.Unlock()
	if ln == nil {
		return errors.New("switchboard: Serve before Listen")
	}
	stop := context.AfterFunc(ctx, func() { n.Close() })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			n.mu.Lock()
			closed := n.closed
			n.mu.Unlock()
			if closed {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			n.Close()
			return fmt.Errorf("switchboard: accept: %w", err)
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			c.Close()
			return nil
		}
		n.hs[c] = struct{}{}
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			n.handshake(c)
		}()
	}
}

// ListenAndServe is Listen followed by Serve.
func (n *Node) ListenAndServe(ctx context.Context) error {
	if err := n.Listen(); err != nil {
		return err
	}
	return n.Serve(ctx)
}

// handshake runs the node side of a connection's handshake and starts it.
func (n *Node) handshake(c *net.UnixConn) {
	done := func() {
		n.mu.Lock()
		delete(n.hs, c)
		n.mu.Unlock()
	}
	fail := func(code pb.Code, reason string) {
		writeControl(c, &pb.Control{Msg: &pb.Control_Refused{Refused: &pb.Refused{Code: code, Reason: reason}}}, nil)
		c.Close()
		done()
	}
	c.SetDeadline(time.Now().Add(n.o.handshakeTimeout))
	cred, err := shm.PeerCred(c)
	if err != nil {
		fail(pb.Code_CODE_INTERNAL, err.Error())
		return
	}
	err = n.o.authorize(cred)
	if err == nil {
		err = n.allow(cred, ActionConnect, "")
	}
	if err != nil {
		n.refused.Add(1)
		n.o.logger.Info("connection refused", slog.Int("uid", int(cred.UID)), slog.Int("pid", int(cred.PID)), slog.String("reason", err.Error()))
		fail(pb.Code_CODE_REFUSED, err.Error())
		return
	}
	msg, err := readControl(c)
	if err != nil {
		n.o.logger.Debug("handshake failed", slog.String("error", err.Error()))
		c.Close()
		done()
		return
	}
	hello := msg.GetHello()
	switch {
	case hello == nil:
		fail(pb.Code_CODE_PROTOCOL_VIOLATION, "expected Hello")
		return
	case hello.GetProtocolVersion() != pb.ProtocolVersion:
		fail(pb.Code_CODE_VERSION_MISMATCH, fmt.Sprintf("node speaks protocol %d, client %d", pb.ProtocolVersion, hello.GetProtocolVersion()))
		return
	}
	socketOnly := hello.GetTransport() == pb.Transport_TRANSPORT_SOCKET
	rings := n.o.rings
	for i, want := range []uint32{hello.GetRequestRingBytes(), hello.GetResponseRingBytes(), hello.GetEventRingBytes()} {
		if want != 0 {
			rings[i] = ringSize(int(want))
		}
	}
	maxMsg := n.o.maxMessage
	if m := int(hello.GetMaxMessageBytes()); m > 0 && m < maxMsg {
		maxMsg = m
	}
	n.mu.Lock()
	n.nextID++
	id := n.nextID
	n.mu.Unlock()
	var lopts []shm.Option
	if n.o.spin != nil {
		lopts = append(lopts, shm.WithSpin(*n.o.spin))
	}
	var link, bridge *shm.Link
	if socketOnly {
		link, bridge, err = shm.NewLocalLink(connRings(rings), shm.WithSpin(0))
	} else {
		link, err = shm.NewLink(fmt.Sprintf("switchboard-%s-c%d", n.o.name, id), connRings(rings), lopts...)
	}
	if err != nil {
		fail(pb.Code_CODE_INTERNAL, err.Error())
		return
	}
	address := fmt.Sprintf(":%s.%d", n.o.name, id)
	welcome := &pb.Welcome{
		ProtocolVersion:   pb.ProtocolVersion,
		ConnectionId:      id,
		Address:           address,
		NodeName:          n.o.name,
		Transport:         pb.Transport_TRANSPORT_SHM,
		RequestRingBytes:  uint32(rings[0]),
		ResponseRingBytes: uint32(rings[1]),
		EventRingBytes:    uint32(rings[2]),
		MaxMessageBytes:   uint32(maxMsg),
		MaxFrameBytes:     uint32(link.Producer(pb.RingResponse).MaxBody()),
		EventQueueLimit:   uint32(n.o.eventQueue),
		EventQueueBytes:   uint64(n.o.eventBytes),
		NodeUid:           uint32(os.Geteuid()),
		NodePid:           int32(os.Getpid()),
		Cpus:              shm.CPUMask(),
	}
	if socketOnly {
		welcome.Transport = pb.Transport_TRANSPORT_SOCKET
	}
	// The connection starts, and is registered, before the client hears
	// Welcome: once its Dial returns, peers can reach it and observers
	// have seen it connect.
	c.SetDeadline(time.Time{})
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		link.Close()
		c.Close()
		done()
		return
	}
	srv := n.newServer()
	cfg := conn.Config{
		ID: id, Address: address, Name: hello.GetClientName(), Cred: cred, Link: link, Sock: c, Bridge: bridge,
		Transport: transportName(socketOnly), MaxPending: n.o.maxPending,
		MaxMessage: maxMsg, EventQueue: n.o.eventQueue, EventBytes: n.o.eventBytes, Overflow: n.o.overflow,
		Host: srv, Logger: n.o.logger,
		Spin: derefOr(n.o.spin, shm.SpinWith(hello.GetCpus())), SpinSet: true,
	}
	cn, err := conn.Start(n.sys, cfg, n.spawn)
	if err != nil {
		n.mu.Unlock()
		link.Close()
		c.Close()
		done()
		return
	}
	n.conns[id] = cn
	n.byID.Store(id, cn)
	n.accepted.Add(1)
	delete(n.hs, c)
	registered := make(chan struct{})
	// Under mu: connClosed, which sends Unregister, takes mu first.
	n.sys.Root.Send(n.registry, &registry.Register{Entry: registry.Entry{ID: id, Address: address, Since: time.Now(), PID: cn.PID(), Conn: cn}, Done: registered})
	n.mu.Unlock()
	select {
	case <-registered:
	case <-time.After(n.o.handshakeTimeout):
	}
	c.SetWriteDeadline(time.Now().Add(n.o.handshakeTimeout))
	err = cn.Welcome(func() error {
		return writeControl(c, &pb.Control{Msg: &pb.Control_Welcome{Welcome: welcome}}, link.Fds())
	})
	c.SetWriteDeadline(time.Time{})
	if err != nil {
		cn.Close(conn.Reason{Code: pb.Code_CODE_OK, Text: "welcome not sent: " + err.Error(), Lost: true})
		return
	}
	n.o.logger.Debug("connected", slog.Uint64("conn", id), slog.String("client", hello.GetClientName()),
		slog.Int("uid", int(cred.UID)), slog.Int("pid", int(cred.PID)))
}

// connRings is the ring layout of a connection, seen from the node (the
// segment's creator). The node's pump waits on one doorbell for requests,
// and for room in the response and event rings; the client's pump on
// another for replies and events; a client caller on a third for room in
// the request ring.
func connRings(sizes [3]int) []shm.RingSpec {
	return []shm.RingSpec{
		pb.RingRequest:  {Capacity: sizes[0], DataBell: pb.BellNode, SpaceBell: pb.BellRequestSpace},
		pb.RingResponse: {Capacity: sizes[1], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: pb.BellNode},
		pb.RingEvent:    {Capacity: sizes[2], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: pb.BellNode},
	}
}

func ringSize(want int) int {
	want = max(shm.MinRingCapacity, min(want, 64<<20))
	return 1 << bits.Len(uint(want-1))
}

// spawn creates a connection actor as a child of the node's root actor.
func (n *Node) spawn(props *actor.Props, name string) (*actor.PID, error) {
	reply := make(chan spawned, 1)
	n.sys.Root.Send(n.root, &spawnChild{props: props, name: name, reply: reply})
	select {
	case r := <-reply:
		return r.pid, r.err
	case <-time.After(10 * time.Second):
		return nil, errors.New("switchboard: root actor did not spawn the connection")
	}
}

type spawnChild struct {
	props *actor.Props
	name  string
	reply chan spawned
}

type spawned struct {
	pid *actor.PID
	err error
}

// rootActor is the node's supervisor: connection actors are its children.
type rootActor struct{ n *Node }

func (a *rootActor) Receive(ac actor.Context) {
	if m, ok := ac.Message().(*spawnChild); ok {
		pid, err := ac.SpawnNamed(m.props, m.name)
		m.reply <- spawned{pid, err}
	}
}

// connClosed runs on a connection's pump after it stopped.
func (n *Node) connClosed(c *conn.Endpoint, why conn.Reason) {
	st := c.Stats()
	n.dropped.Add(st.EventsDropped.Load())
	if why.Code == pb.Code_CODE_PROTOCOL_VIOLATION {
		n.violations.Add(1)
	}
	if why.Code == pb.Code_CODE_SLOW_CONSUMER {
		n.evictions.Add(1)
	}
	n.mu.Lock()
	delete(n.conns, c.ID())
	n.mu.Unlock()
	n.byID.Delete(c.ID())
	n.dropMonitor(c)
	n.sys.Root.Send(n.registry, &registry.Unregister{ID: c.ID(), Reason: disconnectReason(why), Detail: why.Text})
	n.o.logger.Debug("disconnected", slog.Uint64("conn", c.ID()), slog.String("reason", why.Text))
}

// SendEvent queues an event for connection id. It never blocks.
func (n *Node) SendEvent(id uint64, service, command uint16, payload []byte) error {
	n.mu.Lock()
	c := n.conns[id]
	n.mu.Unlock()
	if c == nil {
		return fmt.Errorf("switchboard: no connection %d", id)
	}
	n.events.Add(1)
	c.SendEvent(service, command, payload)
	return nil
}

// ConnInfo describes a connection.
type ConnInfo struct {
	ID        uint64
	Address   string // unique on the bus, never reused by this node
	Name      string // the client's name, from its Hello
	Cred      Cred
	Transport string // "shm" or "socket"
	Since     time.Time
	Groups    []string // groups it is subscribed to, sorted
	Names     []string // well-known names it owns, sorted

	Calls, Sends, Replies uint64 // requests it made to node services, and replies it got
	Events, Dropped       uint64 // events delivered to it, and dropped for it
	BytesIn, BytesOut     uint64
	Violations, Panics    uint64
	Pending               int // its calls to peers waiting for a reply

	// Bytes waiting in its rings, and events queued in the node behind
	// its event ring.
	RequestFill, ResponseFill, EventFill, EventsQueued int
	RingBytes                                          [3]int // ring capacities: request, response, event
}

// Connections lists the node's connections, in id order, as the registry
// actor knows them.
func (n *Node) Connections() []ConnInfo {
	reply := make(chan []registry.Entry, 1)
	n.sys.Root.Send(n.registry, &registry.List{Reply: reply})
	var entries []registry.Entry
	select {
	case entries = <-reply:
	case <-time.After(5 * time.Second):
		return nil
	}
	out := make([]ConnInfo, 0, len(entries))
	for _, e := range entries {
		ci := connInfo(e.Conn)
		ci.Groups, ci.Names = e.Groups, e.Names
		out = append(out, ci)
	}
	return out
}

func connInfo(c *conn.Endpoint) ConnInfo {
	st := c.Stats()
	ci := ConnInfo{ID: c.ID(), Address: c.Address(), Name: c.Name(), Cred: c.Cred(), Transport: c.Transport(), Since: c.Since(),
		Calls: st.Calls.Load(), Sends: st.Sends.Load(), Replies: st.Replies.Load(),
		Events: st.Events.Load(), Dropped: st.EventsDropped.Load(),
		BytesIn: st.BytesIn.Load(), BytesOut: st.BytesOut.Load(),
		Violations: st.Violations.Load(), Panics: st.Panics.Load(), RingBytes: c.RingBytes()}
	ci.RequestFill, ci.ResponseFill, ci.EventFill, ci.EventsQueued = c.Fill()
	ci.Pending = c.Waiting()
	return ci
}

// NodeStats are the node's totals since it started.
type NodeStats struct {
	Name              string
	Started           time.Time
	Connections       int    // open now
	Accepted          uint64 // connections accepted since start
	HandshakesRefused uint64 // refused by WithAuthorize or the policy
	Calls             uint64 // requests served by node services
	Events            uint64 // events offered through Node.SendEvent and Session.SendEvent
	Violations        uint64 // connections closed for breaking the protocol
	Evictions         uint64 // clients disconnected as slow consumers
	Dropped           uint64 // events dropped for slow clients
	Groups, Names     int    // groups with members, names owned
	Published         uint64 // group publications
	Delivered         uint64 // bus messages delivered to peers (direct, group, name)
	Undeliverable     uint64 // want-answer messages nobody could take
}

// Stats returns the node's totals. It does not wait for any actor.
func (n *Node) Stats() NodeStats {
	n.mu.Lock()
	conns := len(n.conns)
	n.mu.Unlock()
	return NodeStats{Name: n.o.name, Started: n.started, Connections: conns, Accepted: n.accepted.Load(),
		HandshakesRefused: n.refused.Load(), Calls: n.calls.Load(), Events: n.events.Load(),
		Violations: n.violations.Load(), Evictions: n.evictions.Load(), Dropped: n.dropped.Load(),
		Groups: len(n.dir.List()), Names: namesLen(n.names.Load()), Published: n.published.Load(),
		Delivered: n.delivered.Load(), Undeliverable: n.undeliverable.Load()}
}

// Close stops the node: it stops accepting, tells every client that the
// node is shutting down, stops every connection and actor, waits for all
// of the node's goroutines, and removes the socket. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		ln := n.ln
		for c := range n.hs {
			c.Close()
		}
		conns := make([]*conn.Endpoint, 0, len(n.conns))
		for _, c := range n.conns {
			conns = append(conns, c)
		}
		n.mu.Unlock()
		if ln != nil {
			ln.Close()
		}
		n.wg.Wait()
		for _, c := range conns {
			c.Close(conn.Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "node shutting down"})
		}
		for _, c := range conns {
			<-c.Done()
		}
		n.bg.Wait() // the registry still answers them
		if _, err := n.sys.Root.StopFuture(n.root).Result(); err != nil {
			n.closeErr = fmt.Errorf("switchboard: stopping the root actor: %w", err)
		}
		n.sys.Shutdown()
	})
	return n.closeErr
}

// serveSystem serves SystemService.
func (n *Node) serveSystem(ctx context.Context, r *Request) ([]byte, error) {
	switch r.Command {
	case SysPing:
		return nil, nil
	case SysEcho:
		return r.Payload, nil // copied into the response ring before the request is released
	case SysInfo:
		n.mu.Lock()
		conns := len(n.conns)
		n.mu.Unlock()
		return gproto.Marshal(&pb.NodeInfo{Name: n.o.name, Version: Version, Pid: int32(os.Getpid()), Uid: uint32(os.Geteuid()),
			StartedUnixNano: n.started.UnixNano(), Connections: uint32(conns), Calls: n.calls.Load(), Events: n.events.Load(),
			TransportDefault: pb.Transport_TRANSPORT_SHM})
	}
	return nil, ErrUnknownCommand
}

// writeControl sends a control frame, with fds attached if any.
func writeControl(c *net.UnixConn, m *pb.Control, fds []int) error {
	body, err := gproto.Marshal(m)
	if err != nil {
		return err
	}
	frame := shm.AppendFrame(nil, shm.Header{Kind: pb.KindControl}, body)
	if len(fds) > 0 {
		return shm.SendFds(c, frame, fds...)
	}
	_, err = c.Write(frame)
	return err
}

// readControl reads one control frame (and no more) from c.
func readControl(c *net.UnixConn) (*pb.Control, error) {
	hdr := make([]byte, shm.HeaderSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	return finishControl(c, hdr)
}

// finishControl reads the rest of a control frame whose header is in hdr.
func finishControl(c io.Reader, hdr []byte) (*pb.Control, error) {
	const maxControl = 64 << 10
	_, _, err := shm.DecodeFrame(hdr, maxControl)
	if err != nil && !errors.Is(err, shm.ErrIncomplete) {
		return nil, err
	}
	n := int(uint32(hdr[0]) | uint32(hdr[1])<<8 | uint32(hdr[2])<<16 | uint32(hdr[3])<<24)
	buf := make([]byte, shm.FrameSize(n))
	copy(buf, hdr)
	if _, err := io.ReadFull(c, buf[len(hdr):]); err != nil {
		return nil, err
	}
	f, _, err := shm.DecodeFrame(buf, maxControl)
	if err != nil {
		return nil, err
	}
	if f.Kind != pb.KindControl {
		return nil, fmt.Errorf("switchboard: frame kind %d, want a control frame", f.Kind)
	}
	var m pb.Control
	if err := gproto.Unmarshal(f.Body, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func transportName(socketOnly bool) string {
	if socketOnly {
		return "socket"
	}
	return "shm"
}

func namesLen(t *map[string]*conn.Endpoint) int {
	if t == nil {
		return 0
	}
	return len(*t)
}
