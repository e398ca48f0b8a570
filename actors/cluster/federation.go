package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Errors Send returns.
var (
	// ErrNodeNotUp: no link to that node is up.
	ErrNodeNotUp = errors.New("cluster: node not up")
	// ErrBudget: the link's byte budget is spent (OverflowError), or was
	// and the link is now down (OverflowDisconnect).
	ErrBudget = errors.New("cluster: link budget spent")
	// ErrTooLarge: the message is larger than Config.MaxMessage.
	ErrTooLarge = errors.New("cluster: message too large")
)

// linkActorName is the name of the actor every node receives its links'
// envelopes at.
const linkActorName = "switchboard-link"

// Federation links a node to the other nodes of its cluster over
// protoactor-go remote; see the package documentation.
type Federation struct {
	cfg         Config
	secret      []byte // the cluster's secret (nil: none)
	serverCreds credentials.TransportCredentials
	dialCreds   credentials.TransportCredentials

	// Set by Start, then read-only.
	self, incarnation string
	host              switchboard.FederationHost
	batchHost         switchboard.FederationBatchHost // host, if it takes a pass's messages at once
	system            *actor.ActorSystem
	remote            *remote.Remote
	sub               *eventstream.Subscription

	// names is a copy of byName, replaced under mu whenever byName
	// changes (setNamesLocked), for Send's lookup without mu: loaded, it
	// is byName as of some moment, as a read under mu would be.
	names atomic.Pointer[map[string]*peer]

	// rmu: held (read) by remote's readers while they hand the link an
	// envelope; Close takes it to stop them (rclosed).
	rmu     sync.RWMutex
	rclosed bool

	started   atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	ctx       context.Context // cancelled by Close: ends the probes
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the ticker and the peers' delivery goroutines

	// mu guards the maps, each peer's up and reason, and closed. Lock
	// order: mu, then a peer's smu or imu (never the other way round);
	// a logLimit's mu is a leaf, taken under any of them.
	mu        sync.RWMutex
	closed    bool
	bySession map[uint64]*peer
	byName    map[string]*peer
	byAddr    map[string]*peer
	dial      map[string]*dialAddr     // addresses to Hello until linked
	disc      discovered               // what Config.Discovery lists
	lastRun   map[string]chan struct{} // node name → its latest delivery goroutine's exited
	// retired: the other nodes' sessions declared down, the latest
	// retiredKept (retiredOrder, oldest first).
	retired      map[uint64]struct{}
	retiredOrder []uint64

	stats counters
	logs  logLimits

	// lost: addresses remote dead-lettered a message to, and when; the
	// ticker declares down their links made before then (beat).
	lost sync.Map

	// ballast raises the garbage collector's heap goal by the link
	// budget while the links run (see Start); never written, so it
	// takes address space, not memory.
	ballast []byte
}

// logLimits holds back the log lines others can provoke at will, one
// limit per kind (loglimit.go).
type logLimits struct {
	plain      logLimit // Hellos from an address not dialable in plaintext
	badSecret  logLimit // Hellos without the cluster's secret
	refusedOut logLimit // the other Hellos this node refused
	refusedIn  logLimit // Byes refusing this node
	calls      logLimit // remote's unary calls refused
	panics     logLimit // streams that broke remote
	protocol   logLimit // links that broke the link protocol
	hostPanics logLimit // messages the host panicked on
	discovery  logLimit // addresses a discovery listed that are ignored
}

type counters struct {
	notUp, overflow, tooLarge       atomic.Uint64 // Send refusals
	unknown, foreign, stale         atomic.Uint64 // envelopes ignored
	protocol, refusedIn, refusedOut atomic.Uint64 // links closed or refused
	panics, refusedCalls            atomic.Uint64 // remote's streams that panicked, unary calls refused
	resets, badSecret               atomic.Uint64 // sessions the host reset; Hellos without the secret
	dials, dialFails                atomic.Uint64 // addresses probed and sent a Hello; probes that failed
	batches, acks, packed           atomic.Uint64 // Batch envelopes sent; Ack envelopes sent; Batches packed
	unsent                          atomic.Uint64 // chunks accepted, still pending when their link went down
	hostPanics                      atomic.Uint64 // deliveries the host panicked on
	discoveryFails, badDiscovered   atomic.Uint64 // Discovery runs failed; addresses it gave that are not HOST:PORT
	dialFull                        atomic.Uint64 // addresses discovered with the dial table full
}

// New checks cfg and returns a Federation that Start brings up. It starts
// nothing: no listener, no goroutine.
func New(cfg Config) (*Federation, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Federation{
		cfg:       cfg,
		stop:      make(chan struct{}),
		bySession: map[uint64]*peer{},
		byName:    map[string]*peer{},
		byAddr:    map[string]*peer{},
		dial:      map[string]*dialAddr{},
		lastRun:   map[string]chan struct{}{},
		retired:   map[uint64]struct{}{},
	}
	server, client, err := cfg.tlsConfigs()
	if err != nil {
		return nil, err
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	if cfg.SecretFile != "" {
		if f.secret, err = readSecret(cfg.SecretFile); err != nil {
			return nil, err
		}
	}
	if server != nil {
		f.serverCreds, f.dialCreds = credentials.NewTLS(server), credentials.NewTLS(client)
	} else {
		f.serverCreds, f.dialCreds = insecure.NewCredentials(), insecure.NewCredentials()
	}
	for _, p := range cfg.Peers {
		if p != cfg.Advertise {
			f.dial[p] = &dialAddr{session: drawSession(), downSince: time.Now()}
		}
	}
	return f, nil
}

// linkWindow is the HTTP/2 flow-control window of a link's connections,
// both ways, fixed: the largest grpc-go's own estimator would grow it to.
// Left dynamic, grpc-go sends a bandwidth-estimation PING (and a
// WINDOW_UPDATE) each time data arrives with no PING outstanding: with one
// message at a time in flight (a request, then its reply), two more
// writes, reads and wake-ups on each side for every message. The link's
// own byte budget (Config.Budget) bounds what is in flight.
const linkWindow = 16 << 20

// linkIOBuffer is the size of gRPC's read and write buffers on the links'
// connections (grpc-go's default: 32 KiB): a Batch of up to 1 MiB is
// written and read in fewer system calls.
const linkIOBuffer = 256 << 10

// Start listens, then dials every peer. It implements
// switchboard.Federation.
func (f *Federation) Start(self, incarnation string, host switchboard.FederationHost) (err error) {
	switch {
	case switchboard.CheckNodeName(self) != nil:
		return fmt.Errorf("cluster: node name %q: %w", self, switchboard.CheckNodeName(self))
	case switchboard.CheckNodeName(incarnation) != nil:
		return fmt.Errorf("cluster: incarnation %q: %w", incarnation, switchboard.CheckNodeName(incarnation))
	case host == nil:
		return errors.New("cluster: no FederationHost")
	case !f.started.CompareAndSwap(false, true):
		return errors.New("cluster: Start called twice")
	}
	f.self, f.incarnation, f.host = self, incarnation, host
	f.batchHost, _ = host.(switchboard.FederationBatchHost)
	// remote.Start panics when it cannot listen: listen first to turn the
	// common case (port taken, no such address) into an error, and
	// recover from the rest.
	ln, err := net.Listen("tcp", f.cfg.Listen)
	if err != nil {
		return fmt.Errorf("cluster: listen: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String()) // the port taken, if Listen said 0
	ln.Close()
	portN, _ := strconv.Atoi(port)
	host0, _, _ := net.SplitHostPort(f.cfg.Listen)
	if host0 == "" {
		host0 = "0.0.0.0"
	}
	defer func() {
		if r := recover(); r != nil {
			// Whatever remote started before it panicked is left to
			// the process's end: it cannot be stopped safely half made.
			f.system = nil
			err = fmt.Errorf("cluster: starting protoactor remote: %v", r)
		}
	}()
	f.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	// A batch is at most 1000 envelopes, and what is queued is within
	// the budget: the receive limit covers a batch of a whole budget.
	limit := int(f.cfg.Budget) + 1000*(frameCost+2*maxAddress+4*maxName) + 1<<20
	f.remote = remote.NewRemote(f.system, remote.Configure(host0, portN,
		remote.WithAdvertisedHost(f.cfg.Advertise),
		remote.WithEndpointWriterBatchSize(1000),
		remote.WithEndpointWriterQueueSize(1024),
		remote.WithServerOptions(grpc.Creds(f.serverCreds), grpc.MaxRecvMsgSize(limit),
			grpc.StaticStreamWindowSize(linkWindow), grpc.StaticConnWindowSize(linkWindow),
			experimental.BufferPool(linkBuffers), grpc.ForceServerCodecV2(linkCodec{}),
			grpc.ReadBufferSize(linkIOBuffer), grpc.WriteBufferSize(linkIOBuffer),
			grpc.ChainUnaryInterceptor(f.refuseUnary), grpc.ChainStreamInterceptor(f.recoverStream)),
		remote.WithDialOptions(grpc.WithTransportCredentials(f.dialCreds),
			grpc.WithStaticStreamWindowSize(linkWindow), grpc.WithStaticConnWindowSize(linkWindow),
			experimental.WithBufferPool(linkBuffers),
			grpc.WithReadBufferSize(linkIOBuffer), grpc.WithWriteBufferSize(linkIOBuffer),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit), grpc.MaxCallSendMsgSize(limit), grpc.ForceCodecV2(linkCodec{}))),
	))
	f.remote.Start()
	if _, ok := f.system.ProcessRegistry.Add(linkProcess{f}, linkActorName); !ok {
		f.shutdownRemote()
		f.system = nil
		return fmt.Errorf("cluster: the process name %q is taken", linkActorName)
	}
	f.sub = f.system.EventStream.Subscribe(func(ev any) {
		switch t := ev.(type) {
		case *remote.EndpointTerminatedEvent:
			f.endpointLost(t.Address)
		case *actor.DeadLetterEvent:
			// remote had no stream for a message to another node's
			// link (a chunk, or a send token, bare or in remote's
			// wrapper): it is lost, and after a token nothing more
			// would go. This may run under a peer's smu (remote
			// publishes it on the sending goroutine): the link is
			// declared down at the next heartbeat, under mu.
			// Hellos and Byes are not: a probe's Hello finds no
			// stream when the node there is gone, which the dial's
			// backoff deals with.
			if env, ok := t.Message.(*linkpb.Envelope); ok && (env.GetHello() != nil || env.GetBye() != nil) {
				break
			}
			if t.PID != nil && t.PID.Id == linkActorName && !f.local(t.PID.Address) {
				f.lost.Store(t.PID.Address, time.Now())
			}
		}
	})
	// Every message crossing a link is copied several times into fresh
	// buffers (gRPC's, remote's protobuf decoding, the host's), while a
	// node's live heap is a few MiB: the collector's heap goal, twice the
	// live heap, came round every few milliseconds at 64 KiB messages,
	// which cost more than carrying them. A link may hold up to Budget
	// bytes anyway: that much never-written ballast lifts the goal to
	// match (GOGC still scales it). The pages are never touched: the
	// node's memory at rest does not grow by it; under load, garbage may
	// grow to about the budget before a collection.
	f.ballast = make([]byte, f.cfg.Budget)
	f.logf("cluster: node %s (%s) linking at %s", self, incarnation, f.cfg.Advertise)
	f.wg.Add(1)
	go f.ticker()
	if f.cfg.Discovery != nil {
		f.wg.Add(1)
		go f.discover()
	}
	return nil
}

// refuseUnary answers remote's unary calls (ListProcesses,
// GetProcessDiagnostics), which remote implements as panics that would
// end the process: nothing but the stream is served.
func (f *Federation) refuseUnary(ctx context.Context, _ any, info *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
	f.stats.refusedCalls.Add(1)
	f.limitedf(&f.logs.calls, "cluster: refused %s from %s: only the stream is served", clip(info.FullMethod), peerOf(ctx))
	return nil, status.Error(codes.Unimplemented, "switchboard link: only the stream is served")
}

// peerOf names the other end of a gRPC call, for a log line.
func peerOf(ctx context.Context) string {
	if p, ok := grpcpeer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "an unknown address"
}

// recoverStream turns a panic in remote's stream reader into the end of
// that stream: it indexes a batch's tables with the indexes the batch
// carries, unchecked, so a lying peer would otherwise crash the node.
// Ending the stream ends the link (its sender sees it break).
func (f *Federation) recoverStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f.stats.panics.Add(1)
			f.limitedf(&f.logs.panics, "cluster: a stream from %s broke remote (%v): closed", peerOf(ss.Context()), r)
			err = status.Error(codes.InvalidArgument, "switchboard link: malformed batch")
		}
	}()
	return handler(srv, ss)
}

// Send queues msg for node. It implements switchboard.Federation.
func (f *Federation) Send(node string, msg []byte) error {
	if int64(len(msg)) > f.cfg.MaxMessage {
		f.stats.tooLarge.Add(1)
		return ErrTooLarge
	}
	var p *peer
	if m := f.names.Load(); m != nil { // byName as of its last change
		p = (*m)[node]
	}
	// Not before the host heard NodeUp (announced, which comes after up):
	// until then, what it sends is meant for an earlier session of node's.
	if p == nil || p.isDown.Load() || !p.announced.Load() {
		f.stats.notUp.Add(1)
		return ErrNodeNotUp
	}
	refused, err := p.send(msg)
	if refused {
		f.stats.overflow.Add(1)
		if f.cfg.Overflow == OverflowDisconnect {
			f.declareDown(p, "link budget spent", byeProtocol)
		}
	} else if err != nil {
		f.stats.notUp.Add(1)
	}
	return err
}

// Close says Bye to every linked node, ends every link (the host hears
// NodeDown for each that was up) and stops remote. It implements
// switchboard.Federation. It waits for the goroutines that call the host,
// so the host must not call it from NodeUp, NodeDown or Deliver.
func (f *Federation) Close() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		var peers []*peer
		for _, p := range f.bySession {
			peers = append(peers, p)
			f.downLocked(p, "this node is closing its links", byeLeaving)
		}
		f.mu.Unlock()
		// A Send that began before its peer went down holds smu until
		// its envelopes are with remote; every later one sees the peer
		// down. Wait for those, then for remote's readers handing the
		// link an envelope (they may reply), so that nothing sends once
		// remote is stopped.
		for _, p := range peers {
			p.smu.Lock()
			p.smu.Unlock() //nolint:staticcheck // an empty critical section: a barrier
		}
		close(f.stop)
		f.cancel()
		f.rmu.Lock()
		f.rclosed = true
		f.rmu.Unlock()
		f.wg.Wait()
		if f.system != nil {
			f.system.EventStream.Unsubscribe(f.sub)
			f.shutdownRemote()
		}
		f.ballast = nil
	})
	return nil
}

// shutdownRemote stops the gRPC server, then the endpoint writers (each
// closes its client connection as it stops) and the actor system. It does
// not wait for the writers: one dialling an address where nothing
// listens finishes its retries first (up to 10 s), and would hold Close.
// (remote also leaks the client connection of each failed dial attempt:
// a few gRPC goroutines per unreachable peer per retry cycle, until the
// process ends.)
func (f *Federation) shutdownRemote() {
	f.remote.Shutdown(false)
	f.system.Root.Stop(f.system.NewLocalPID("EndpointSupervisor"))
	f.system.Root.Stop(f.system.NewLocalPID("activator"))
	f.system.Shutdown()
}

// linkProcess is the process the other nodes' envelopes arrive at
// (linkActorName in remote's process registry): not an actor with a
// mailbox, so that remote's reader of a link's stream hands each envelope
// straight to the link, one at a time per stream, with no goroutine in
// between.
type linkProcess struct{ f *Federation }

func (lp linkProcess) SendUserMessage(_ *actor.PID, m any) {
	f := lp.f
	_, m, _ = actor.UnwrapEnvelope(m) // a sender or headers: ignored
	env, ok := m.(*linkpb.Envelope)
	if !ok {
		f.stats.foreign.Add(1) // some other registered protobuf type
		return
	}
	f.rmu.RLock()
	defer f.rmu.RUnlock()
	if !f.rclosed {
		f.receive(env)
	}
}

func (linkProcess) SendSystemMessage(*actor.PID, any) {} // watches and stops: nothing to do
func (linkProcess) Stop(*actor.PID)                   {}

// receive handles one envelope from another node.
func (f *Federation) receive(env *linkpb.Envelope) {
	switch b := env.Body.(type) {
	case *linkpb.Envelope_Data:
		p := f.peer(env.Session)
		if p == nil || p.isDown.Load() {
			f.stats.stale.Add(1) // fenced, or never linked
			return
		}
		p.heard()
		if !f.isUp(p) {
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: data before the link was up", byeProtocol)
			return
		}
		if !p.take([]*linkpb.Data{b.Data}) {
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: sent past its budget", byeProtocol)
		}
	case *linkpb.Envelope_Batch:
		p := f.peer(env.Session)
		if p == nil || p.isDown.Load() {
			f.stats.stale.Add(1)
			return
		}
		p.heard()
		switch {
		case !f.isUp(p):
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: data before the link was up", byeProtocol)
		case b.Batch.Ack != 0 && !p.ack(b.Batch.Ack):
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: acknowledged what was never sent", byeProtocol)
		case len(b.Batch.Packed) > 0 && len(b.Batch.Data) > 0:
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: a batch both packed and not", byeProtocol)
		case len(b.Batch.Packed) > 0 && !p.takePacked(b.Batch.First, b.Batch.Packed),
			len(b.Batch.Data) > 0 && !p.take(b.Batch.Data):
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: sent past its budget", byeProtocol)
		}
	case *linkpb.Envelope_Ack:
		if p := f.peer(env.Session); p != nil && !p.isDown.Load() {
			p.heard()
			if !p.ack(b.Ack.GetSeq()) {
				f.stats.protocol.Add(1)
				f.declareDown(p, "link protocol error: acknowledged what was never sent", byeProtocol)
			}
		} else {
			f.stats.stale.Add(1)
		}
	case *linkpb.Envelope_Heartbeat:
		p := f.peer(env.Session)
		if p == nil {
			f.stats.stale.Add(1)
			return
		}
		p.heard()
		if a := b.Heartbeat.GetAck(); a != 0 && !p.isDown.Load() && !p.ack(a) {
			f.stats.protocol.Add(1)
			f.declareDown(p, "link protocol error: acknowledged what was never sent", byeProtocol)
		}
	case *linkpb.Envelope_Hello:
		f.onHello(env.Session, b.Hello)
	case *linkpb.Envelope_Bye:
		f.onBye(env.Session, b.Bye)
	default:
		f.stats.unknown.Add(1) // a newer node's kind of envelope
	}
}

func (f *Federation) peer(session uint64) *peer {
	f.mu.RLock()
	p := f.bySession[session]
	f.mu.RUnlock()
	return p
}

func (f *Federation) isUp(p *peer) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return p.up
}

// send hands one envelope to remote for pid. Remote serializes it later,
// on its writer's goroutine: an envelope is never touched once sent.
// Never to this node's own address (remote would deliver it here, on the
// calling goroutine, under the caller's locks): Hellos from it are
// dropped, and it is never dialled.
func (f *Federation) send(pid *actor.PID, env *linkpb.Envelope) {
	if f.local(pid.Address) {
		return
	}
	f.system.Root.Send(pid, env)
}

func (f *Federation) hello(pid *actor.PID, session, seen uint64) {
	f.send(pid, &linkpb.Envelope{Session: session, Body: &linkpb.Envelope_Hello{Hello: &linkpb.Hello{
		Version: protoVersion, Cluster: f.cfg.Cluster, Node: f.self, Incarnation: f.incarnation,
		Address: f.cfg.Advertise, Seen: seen, Budget: uint64(f.cfg.Budget), Secret: f.secret,
		Features: f.features(),
	}}})
}

// features is what this node announces it takes (Hello.features).
func (f *Federation) features() uint32 {
	if f.cfg.v1Only {
		return 0
	}
	if f.cfg.noPacked {
		return uint32(linkpb.Feature_FEATURE_BATCH)
	}
	return uint32(linkpb.Feature_FEATURE_BATCH | linkpb.Feature_FEATURE_PACKED)
}

func (f *Federation) bye(pid *actor.PID, session, to uint64, code uint32, reason string) {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	f.send(pid, &linkpb.Envelope{Session: session, Body: &linkpb.Envelope_Bye{Bye: &linkpb.Bye{
		Reason: reason, To: to, Code: code, Address: f.cfg.Advertise,
	}}})
}

func (f *Federation) logf(format string, args ...any) {
	if f.cfg.Logger != nil {
		f.cfg.Logger.Info(fmt.Sprintf(format, args...))
	}
}
