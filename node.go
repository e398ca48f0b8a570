package switchboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
)

// Version is the version of this module's node and client.
const Version = "0.1.0-dev"

// SystemService is the service id of the node's built-in service, served
// by every node: SysPing answers an empty reply, SysEcho returns the
// payload, SysInfo returns a NodeInfo protobuf message, SysServices a
// ServiceList (see Conn.Services), SysNodes a ClusterNodes (see
// Conn.ClusterNodes).
const (
	SystemService uint16 = 0xFFFF
	SysPing       uint16 = 1
	SysEcho       uint16 = 2
	SysInfo       uint16 = 3
	SysServices   uint16 = 4
	SysNodes      uint16 = 5
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

type nodeOptions struct {
	socket           string
	name             string
	logger           *slog.Logger
	authorize        func(Cred) error
	maxMessage       int
	rings            [3]int
	eventQueue       int
	eventBytes       int
	eventWait        time.Duration
	overflow         OverflowPolicy
	handshakeTimeout time.Duration
	selector         func(service, command uint16) Handler
	spin             *time.Duration
	policy           Policy
	listener         *net.UnixListener
	socketMode       *os.FileMode // nil: 0600, or 0660 with a socket group
	socketGroup      int          // -1: none
	maxPending       int
	maxActorCalls    int
	handlerGrace     time.Duration
	maxRing          int
	// Per-uid limits (0: none): connections held, handshakes in progress;
	// root and the node's uid have their own.
	uidConns, uidHandshakes   int
	privConns, privHandshakes int
	observe                   observers  // node_observe.go
	noDirect                  bool       // WithDirectBrokering(false)
	fed                       Federation // WithFederation (node_fed_state.go)
	adaptiveProcs             bool       // WithAdaptiveProcs (node_procs.go)
}

// WithNodeName names the node (Welcome, NodeInfo, addresses).
func WithNodeName(name string) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if len(name) == 0 || len(name) > 64 || strings.ContainsAny(name, ". :\t\n") {
			return fmt.Errorf("switchboard: node name %q: 1 to 64 bytes, without '.', ':' or spaces", name)
		}
		o.name = name
		return nil
	})
}

// WithLogger sets the node's logger; protoactor's own logs go to it too.
// The default discards everything.
func WithLogger(l *slog.Logger) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.logger = l; return nil })
}

// WithAuthorize decides whether a connecting process may use the node,
// from its kernel-checked credentials; an error refuses it with the
// error's text. The default admits root and the node's own uid.
func WithAuthorize(f func(Cred) error) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.authorize = f; return nil })
}

// OverflowPolicy says what happens to events for a client that does not
// read them fast enough, once its queue in the node is full.
type OverflowPolicy int

const (
	// DropOldest drops the oldest queued event; the client sees the number
	// dropped with its next event (Event.Dropped).
	DropOldest OverflowPolicy = iota
	// DisconnectSlow disconnects the client as a slow consumer.
	DisconnectSlow
)

// WithHandshakeTimeout bounds how long a connecting client may take to say
// Hello (default 2s).
func WithHandshakeTimeout(d time.Duration) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.handshakeTimeout = d; return nil })
}

// WithSelector picks the handler for a service that Handle did not
// register (coroipc's user-defined selector); nil means unknown service.
func WithSelector(f func(service, command uint16) Handler) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.selector = f; return nil })
}

// WithListener makes the node serve on ln, a listener it did not create
// (systemd socket activation, a test): Listen then uses ln instead of
// creating the socket, and Close closes ln but leaves its path alone
// unless ln unlinks on close.
func WithListener(ln *net.UnixListener) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if ln == nil {
			return errors.New("switchboard: nil listener")
		}
		o.listener = ln
		if a, ok := ln.Addr().(*net.UnixAddr); ok && o.socket == "" {
			o.socket = a.Name
		}
		return nil
	})
}

// WithMaxPending bounds the replies from peers one connection may wait for
// at once (default 4096); past it, Request and RequestGroup fail with
// ErrTooManyPending.
func WithMaxPending(n int) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if n <= 0 {
			return fmt.Errorf("switchboard: max pending %d must be positive", n)
		}
		o.maxPending = n
		return nil
	})
}

// Node serves connections. Create it with NewNode, register services with
// Handle, then Listen and Serve (or ListenAndServe); Close stops it.
type Node struct {
	o        nodeOptions
	sys      *actor.ActorSystem
	root     *actor.PID
	connRoot *actor.RootContext // spawns connection actors under connGuardian (connSpawner)
	pid, uid int                // the process's, for Welcome: read once, not per connection
	reg      *registry.Registry // the one table of live connections, the groups, the names
	// links are the shared-memory links of the default ring sizes, made
	// ahead by the pool's goroutine; Close stops it once no handshake
	// runs.
	links    *shm.LinkPool
	fdMu     sync.Mutex // a leaf: held while a link is made and while the spare descriptor is traded (refuseOutOfFds)
	services [1 << 16]atomic.Pointer[service]
	started  time.Time
	// addrPrefix starts every address of this node run: ":NAME.INCARNATION."
	// (newIncarnation), then the connection id.
	addrPrefix string

	mu          sync.Mutex
	ln          *net.UnixListener
	createdDirs []string // the socket's directories Listen created, deepest first
	socketID    socketID // the socket Listen bound, which Close unlinks
	nextID      uint64
	hs          map[*net.UnixConn]uint32 // handshakes in progress, with the client's uid
	hsByUID     map[uint32]int           // handshakes in progress by uid
	connsByUID  map[uint32]int           // connections by uid, from the handshake's start to connClosed
	closed      bool
	watch       *conn.SocketWatcher // the connections' sockets (node_watch.go)
	watchFailed bool

	wg        sync.WaitGroup // accept loop and handshakes
	closeOnce sync.Once
	closeErr  error
	procsStop func()      // stops the governor of Ps this node runs (node_procs.go), under mu; nil: none
	procsOn   atomic.Bool // the node's governor runs (read by Stats without mu)

	calls, events atomic.Uint64
	policy        atomic.Pointer[policyBox]
	refused       atomic.Uint64                   // handshakes refused by authorization or policy
	refusals      [len(actionNames)]atomic.Uint64 // refusals by action, every path
	refusalLog    logLimiter
	fdExhausted   atomic.Uint64 // accepts and handshakes that found no descriptor free
	accepted      atomic.Uint64
	violations    atomic.Uint64 // totals of closed connections' counters, plus live ones at Stats
	evictions     atomic.Uint64
	dropped       atomic.Uint64
	unserved      atomic.Uint64
	published     atomic.Uint64
	delivered     atomic.Uint64
	undeliverable atomic.Uint64
	late          atomic.Uint64 // replies discarded because their caller had gone
	stuck         atomic.Int64  // handlers still running for released connections
	actorPanics   atomic.Uint64
	actorSeq      actorSeq
	actorServices actorServices
	deadLetters   *eventstream.Subscription

	bg sync.WaitGroup // listings answered off a connection's pump; Close waits for them

	monMu    sync.Mutex // writers of monitors
	monitors atomic.Pointer[[]monitor]
	direct   directBroker // node_direct.go
	fed      *fedState    // WithFederation; nil without (node_fed_state.go)
}

// NewNode returns a node configured by opts. It does not listen yet.
func NewNode(opts ...NodeOption) (*Node, error) {
	o := nodeOptions{
		name:             "n1",
		maxMessage:       16 << 20,
		rings:            [3]int{1 << 20, 1 << 20, 1 << 20},
		eventQueue:       1024,
		eventBytes:       4 << 20,
		eventWait:        10 * time.Millisecond,
		maxRing:          4 << 20,
		uidConns:         1024,
		uidHandshakes:    64,
		handshakeTimeout: 2 * time.Second,
		maxActorCalls:    1024,
		handlerGrace:     20 * time.Millisecond,
		socketGroup:      -1,
	}
	for _, opt := range opts {
		if err := opt.applyNode(&o); err != nil {
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
		o:          o,
		sys:        actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return lg })),
		hs:         map[*net.UnixConn]uint32{},
		hsByUID:    map[uint32]int{},
		connsByUID: map[uint32]int{},
		started:    time.Now(),
		pid:        os.Getpid(),
		uid:        os.Geteuid(),
	}
	n.addrPrefix = ":" + o.name + "." + newIncarnation(n.started) + "."
	n.connRoot = actor.NewRootContext(n.sys, nil).WithGuardian(connGuardian{n})
	n.links = shm.NewLinkPool("switchboard-"+o.name, pb.ConnRings(o.rings), spareLinks, n.linkOptions()...)
	n.links.Guard(&n.fdMu)
	root, err := n.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &rootActor{n} }), "node")
	if err != nil {
		return nil, err
	}
	n.root = root
	n.deadLetters = n.sys.EventStream.Subscribe(n.deadLetter)
	n.SetPolicy(o.policy)
	if n.reg, err = registry.Start(n.sys, spawner{n}); err != nil {
		n.sys.Root.StopFuture(root).Wait()
		return nil, err
	}
	n.fedInit()
	n.Handle(SystemService, HandlerFunc(n.serveSystem), systemServiceOptions...)
	return n, nil
}

// ActorSystem returns the node's actor system, for actors that serve
// services or send events.
func (n *Node) ActorSystem() *actor.ActorSystem { return n.sys }

// SocketPath returns the path the node listens on.
func (n *Node) SocketPath() string { return n.o.socket }

// Serve accepts connections until ctx ends or Close is called; then it
// closes the node and returns nil (or the accept error that stopped it),
// once the node is closed: its socket removed, its goroutines ended.
func (n *Node) Serve(ctx context.Context) error {
	n.mu.Lock()
	ln := n.ln
	n.mu.Unlock()
	if ln == nil {
		return errors.New("switchboard: Serve before Listen")
	}
	stop := context.AfterFunc(ctx, func() { n.Close() })
	defer stop()
	if err := n.fedStart(); err != nil {
		n.Close()
		return fmt.Errorf("switchboard: starting the federation: %w", err)
	}
	// A spare descriptor, given up when the process runs out, so that a
	// client waiting to connect can be told why it is refused.
	spare, _ := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	defer func() {
		if spare >= 0 {
			unix.Close(spare)
		}
	}()
	backoff := time.Duration(0)
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			n.mu.Lock()
			closed := n.closed
			n.mu.Unlock()
			if closed {
				n.Close() // returns once the Close in progress is done: the socket gone, every goroutine ended
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if outOfFds(err) {
				// Out of descriptors: refuse with a reason, back off, and
				// serve again as soon as descriptors are freed.
				spare = n.refuseOutOfFds(ln, spare)
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			n.Close()
			return fmt.Errorf("switchboard: accept: %w", err)
		}
		backoff = 0
		k, err := shm.PeerCred(c) // the kernel's word, before any lock
		if err != nil {
			c.Close()
			continue
		}
		cred := credOf(k)
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			c.Close()
			n.Close() // waits for the Close in progress
			return nil
		}
		if _, limit := n.o.limits(cred.UID); limit > 0 && n.hsByUID[cred.UID] >= limit {
			n.mu.Unlock()
			n.refuseConnect(c, cred, pb.Code_CODE_LIMIT_EXCEEDED, fmt.Errorf("uid %d has %d handshakes in progress, the most the node allows", cred.UID, limit))
			continue
		}
		n.hs[c] = cred.UID
		n.hsByUID[cred.UID]++
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			n.handshake(c, cred)
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

// spawner spawns the node's actors (connections, groups, the registry) as
// children of its root actor, their supervisor: the node's conn.Spawner.
type spawner struct{ n *Node }

// SpawnChild asks the root actor to spawn a child, and waits for it.
func (s spawner) SpawnChild(props *actor.Props, name string) (*actor.PID, error) {
	n := s.n
	reply := make(chan spawned, 1)
	n.sys.Root.Send(n.root, &spawnChild{props: props, name: name, reply: reply})
	select {
	case r := <-reply:
		return r.pid, r.err
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("switchboard: the root actor did not spawn %s", name)
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

// connClosed runs on a connection's pump after it stopped.
func (n *Node) connClosed(c *conn.Endpoint, why conn.Reason) {
	st := c.Stats()
	n.dropped.Add(st.EventsDropped.Load())
	n.unserved.Add(st.ByeUnserved.Load())
	if why.Code == pb.Code_CODE_PROTOCOL_VIOLATION {
		n.violations.Add(1)
	}
	if why.Code == pb.Code_CODE_SLOW_CONSUMER {
		n.evictions.Add(1)
	}
	n.dropMonitor(c)
	n.directGone(c)
	n.mu.Lock() // after the handshake's Add, which holds mu (see there)
	n.reg.Remove(c, why.Disconnect(), why.Text)
	if !c.Abandoned() { // else its uid keeps the slot until the handler returns (connServer.Closed)
		n.uncount(c.Cred().UID)
	}
	n.mu.Unlock()
	n.observeDisconnect(c)
	n.o.logger.Debug("disconnected", slog.Uint64("conn", c.ID()), slog.String("reason", why.Text))
}

// SendEvent queues an event for connection id. It never blocks.
func (n *Node) SendEvent(id uint64, service, command uint16, payload []byte) error {
	c := n.reg.Lookup(id)
	if c == nil {
		return fmt.Errorf("switchboard: no connection %d", id)
	}
	n.events.Add(1)
	c.SendEvent(service, command, payload)
	return nil
}

// Connections lists the node's connections, in id order, as the registry
// actor knows them.
func (n *Node) Connections() []ConnInfo {
	entries, err := n.reg.List(5 * time.Second)
	if err != nil {
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

// Stats returns the node's totals. It does not wait for any actor.
func (n *Node) Stats() NodeStats {
	refusals := make(map[Action]uint64, len(n.refusals))
	for a := range n.refusals {
		refusals[Action(a)] = n.refusals[a].Load()
	}
	s := NodeStats{Name: n.o.name, Started: n.started, Connections: n.reg.Len(), Accepted: n.accepted.Load(),
		HandshakesRefused: n.refused.Load(), Refusals: refusals, DescriptorsExhausted: n.fdExhausted.Load(), Calls: n.calls.Load(), Events: n.events.Load(),
		Violations: n.violations.Load(), Evictions: n.evictions.Load(), Dropped: n.dropped.Load(), Unserved: n.unserved.Load(),
		Groups: len(n.reg.Groups().List()), Names: n.reg.NameCount(), Published: n.published.Load(),
		Delivered: n.delivered.Load(), Undeliverable: n.undeliverable.Load(),
		LateReplies: n.late.Load(), StuckHandlers: int(n.stuck.Load()), ActorPanics: n.actorPanics.Load(),
		SpareSegments: n.links.Stats().Spares}
	n.directStats(&s)
	s.Procs = n.Procs()
	return s
}

// Close stops the node: it stops accepting, tells every client that the
// node is shutting down, stops every connection and actor, waits for all
// of the node's goroutines (handlers that ignore their context included),
// and removes the socket. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		ln := n.ln
		for c := range n.hs {
			c.Close()
		}
		// Handshakes enter their connection in the table under mu, once
		// they saw the node open: from here on, none does.
		conns := n.reg.All()
		dirs, sock := n.createdDirs, n.socketID
		stopProcs := n.procsStop
		n.mu.Unlock()
		if ln != nil {
			ln.Close()
			unlinkSocket(sock)
			removeDirs(dirs)
		}
		n.wg.Wait()
		n.fedClose() // the links end; other nodes' connections are announced gone here
		n.links.Close()
		for _, c := range conns {
			c.Close(conn.Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "node shutting down"})
		}
		for _, c := range conns {
			<-c.Done()
		}
		n.closeWatcher()
		n.bg.Wait() // the registry still answers them
		if _, err := n.sys.Root.StopFuture(n.root).Result(); err != nil {
			n.closeErr = fmt.Errorf("switchboard: stopping the root actor: %w", err)
		}
		n.sys.EventStream.Unsubscribe(n.deadLetters)
		n.sys.Shutdown()
		if stopProcs != nil {
			stopProcs() // GOMAXPROCS back as Listen found it
			n.procsOn.Store(false)
		}
	})
	return n.closeErr
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

func connInfo(c *conn.Endpoint) ConnInfo {
	st := c.Stats()
	ci := ConnInfo{ID: c.ID(), Address: c.Address(), Name: c.Name(), Cred: credOf(c.Cred()), Transport: c.Transport(), Since: c.Since(),
		Calls: st.Calls.Load(), Sends: st.Sends.Load(), Replies: st.Replies.Load(),
		Events: st.Events.Load(), Dropped: st.EventsDropped.Load(),
		EventWaits: st.EventWaits.Load(), EventWaitsExpired: st.EventWaitsExpired.Load(),
		BytesIn: st.BytesIn.Load(), BytesOut: st.BytesOut.Load(),
		Violations: st.Violations.Load(), Panics: st.Panics.Load(), LateReplies: st.LateReplies.Load(), RingBytes: c.RingBytes()}
	ci.RequestFill, ci.ResponseFill, ci.EventFill, ci.EventsQueued = c.Fill()
	ci.Pending, ci.ActorCalls = c.Waiting(), c.ActorCalls()
	return ci
}
