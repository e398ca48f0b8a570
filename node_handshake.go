package switchboard

import (
	"fmt"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// handshake runs the node side of a connection's handshake and starts it;
// cred is the client's, read by Serve.
func (n *Node) handshake(c *net.UnixConn, cred Cred) {
	done := func() {
		n.mu.Lock()
		n.handshakeDone(c)
		n.mu.Unlock()
	}
	fail := func(code pb.Code, reason string) {
		pb.WriteControl(c, &pb.Control{Msg: &pb.Control_Refused{Refused: &pb.Refused{Code: code, Reason: reason}}}, nil)
		c.Close()
		done()
	}
	c.SetDeadline(time.Now().Add(n.o.handshakeTimeout))
	kcred := shm.Cred{PID: cred.PID, UID: cred.UID, GID: cred.GID}
	err := n.o.authorize(cred)
	if err == nil {
		err = n.decide(cred, ActionConnect, "") // refuseConnect counts and logs
	}
	if err != nil {
		n.refuseConnect(c, cred, pb.Code_CODE_REFUSED, err)
		done()
		return
	}
	// The uid's connection limit: counted from here (a reservation, given
	// back if the handshake fails) to connClosed.
	n.mu.Lock()
	if limit, _ := n.o.limits(cred.UID); limit > 0 && n.connsByUID[cred.UID] >= limit {
		n.mu.Unlock()
		n.refuseConnect(c, cred, pb.Code_CODE_LIMIT_EXCEEDED, fmt.Errorf("uid %d holds %d connections, the most the node allows", cred.UID, limit))
		done()
		return
	}
	n.connsByUID[cred.UID]++
	n.mu.Unlock()
	started := false
	defer func() {
		if !started {
			n.mu.Lock()
			n.uncount(cred.UID)
			n.mu.Unlock()
		}
	}()
	msg, err := pb.ReadControl(c)
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
			rings[i] = ringSize(int(want), n.o.maxRing)
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
	var link, bridge *shm.Link
	switch {
	case socketOnly:
		n.fdMu.Lock() // its doorbells are descriptors too: see refuseOutOfFds
		link, bridge, err = shm.NewLocalLink(pb.ConnRings(rings), shm.WithSpin(0))
		n.fdMu.Unlock()
	case rings == n.o.rings:
		link, err = n.links.Get() // made ahead: a segment nobody has had (made under fdMu)
	default:
		n.fdMu.Lock()
		link, err = shm.NewLink(fmt.Sprintf("switchboard-%s-c%d", n.o.name, id), pb.ConnRings(rings), n.linkOptions()...)
		n.fdMu.Unlock()
	}
	if err != nil {
		if outOfFds(err) {
			n.fdExhausted.Add(1)
			n.refuseConnect(c, cred, pb.Code_CODE_REFUSED, errNoFds)
			done()
			return
		}
		fail(pb.Code_CODE_INTERNAL, err.Error())
		return
	}
	address := n.addrPrefix + strconv.FormatUint(id, 10)
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
		NodeUid:           uint32(n.uid),
		NodePid:           int32(n.pid),
		Cpus:              shm.CPUMask(),
		Features:          hello.GetFeatures() & n.grantable(socketOnly), // all the node knows
	}
	if socketOnly {
		welcome.Transport = pb.Transport_TRANSPORT_SOCKET
	}
	// The connection starts, and enters the table, before the client hears
	// Welcome: once its Dial returns, peers can reach it. The registry's
	// actor announces it (the "connected" notice) on its own time: the
	// handshake does not wait for it, the connection's pump does, before
	// it serves the client's first request (cfg.Announced), so that
	// everything the client does comes after its arrival in every order.
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
	announced := make(chan struct{})
	cfg := conn.Config{
		ID: id, Address: address, Name: hello.GetClientName(), Cred: kcred, Link: link, Sock: c, Bridge: bridge,
		Transport: transportName(socketOnly), MaxPending: n.o.maxPending,
		MaxMessage: maxMsg, EventQueue: n.o.eventQueue, EventBytes: n.o.eventBytes, Overflow: overflowPolicy(n.o.overflow),
		Host: srv, Logger: n.o.logger, MaxActorCalls: n.o.maxActorCalls, Late: &n.late, Stuck: &n.stuck,
		HandlerGrace: n.o.handlerGrace, EventWait: n.o.eventWait, Watcher: n.sockWatcher(),
		PeerContext: welcome.GetFeatures()&uint32(pb.Feature_FEATURE_PEER_CONTEXT) != 0,
		Spin:        derefOr(n.o.spin, shm.SpinWith(hello.GetCpus())), SpinSet: true,
		DirectPeers: welcome.GetFeatures()&uint32(pb.Feature_FEATURE_DIRECT_PEERS) != 0,
		Announced:   announced,
	}
	n.connObservers(&cfg)
	cn, err := conn.Start(n.sys, cfg, connSpawner{n})
	if err != nil {
		n.mu.Unlock()
		link.Close()
		c.Close()
		done()
		return
	}
	started = true
	n.accepted.Add(1)
	n.handshakeDone(c)
	// Under mu, like connClosed's Remove: a connection that ends at once
	// still leaves the table after it entered it.
	n.reg.Add(cn, announced)
	n.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(n.o.handshakeTimeout))
	err = cn.Welcome(func() error {
		return pb.WriteControl(c, &pb.Control{Msg: &pb.Control_Welcome{Welcome: welcome}}, link.Fds())
	})
	c.SetWriteDeadline(time.Time{})
	if err != nil {
		cn.Close(conn.Reason{Code: pb.Code_CODE_OK, Text: "welcome not sent: " + err.Error(), Lost: true})
		return
	}
	if link.Seg != nil {
		link.Seg.DropFd() // the client has its own copy; the mapping stays
	}
	n.o.logger.Debug("connected", slog.Uint64("conn", id), slog.String("client", hello.GetClientName()),
		slog.Int("uid", int(cred.UID)), slog.Int("pid", int(cred.PID)))
}

// connSpawner spawns a connection's actor at once, on the handshake's
// goroutine, instead of asking the root actor and waiting for its answer
// (spawner): the actor's parent is a guardian with the node's connGuardian
// strategy, which stops a connection actor that fails, as the root actor
// does with its own children. Node.Close ends the connections itself, so
// they need not be the root's children.
type connSpawner struct{ n *Node }

func (s connSpawner) SpawnChild(props *actor.Props, name string) (*actor.PID, error) {
	return s.n.connRoot.SpawnNamed(props, name)
}

// connGuardian supervises the connections' actors: one that fails is
// stopped (its connection ends), and logged.
type connGuardian struct{ n *Node }

func (g connGuardian) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID,
	_ *actor.RestartStatistics, reason any, _ any) {
	g.n.o.logger.Error("node actor failed; stopping it", slog.String("actor", child.GetId()), slog.Any("reason", reason))
	sup.StopChildren(child)
}

// spareLinks is how many links of the node's default ring sizes it keeps
// made ahead (Node.links): enough for a burst of connections while the
// pool's goroutine makes more.
const spareLinks = 4

// linkOptions are the options of the node's side of every link.
func (n *Node) linkOptions() []shm.Option {
	if n.o.spin != nil {
		return []shm.Option{shm.WithSpin(*n.o.spin)}
	}
	return nil
}

// lastStart is the start, in Unix milliseconds, that this process's
// latest node took for its incarnation.
var lastStart atomic.Int64

// newIncarnation names one run of a node, so that its addresses
// (":NAME.INCARNATION.ID") differ from those of every earlier run, a
// restart on the same socket included: a client holding a dead run's
// address finds nobody instead of whoever got its id. It is the start in
// Unix milliseconds, in base 36 (8 characters until 2059), then 4 random
// base-36 characters for runs in other processes that start in the same
// millisecond or after the clock was set back. Within a process each node
// takes a later millisecond than the one before it, so two nodes started
// at once differ without relying on chance.
func newIncarnation(start time.Time) string {
	ms := start.UnixMilli()
	for {
		last := lastStart.Load()
		ms = max(ms, last+1)
		if lastStart.CompareAndSwap(last, ms) {
			break
		}
	}
	const randRange = 36 * 36 * 36 * 36
	// randRange + r has 5 digits in base 36: drop the leading 1, keep 4.
	return strconv.FormatInt(ms, 36) + strconv.FormatUint(randRange+rand.Uint64N(randRange), 36)[1:]
}

// ringSize is the ring a client that asks for want bytes gets: a power of
// two, at least the smallest ring, at most ceiling (WithMaxRing).
func ringSize(want, ceiling int) int {
	want = max(shm.MinRingCapacity, min(want, ceiling))
	return 1 << bits.Len(uint(want-1))
}

func transportName(socketOnly bool) string {
	if socketOnly {
		return "socket"
	}
	return "shm"
}

// overflowPolicy maps an OverflowPolicy to the connection's.
func overflowPolicy(p OverflowPolicy) conn.OverflowPolicy {
	if p == DisconnectSlow {
		return conn.Disconnect
	}
	return conn.DropOldest
}
