package switchboard

import (
	"context"
	"fmt"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// ConnInfo describes a connection.
type ConnInfo struct {
	ID        uint64 // counted from 1 in each run of the node
	Address   string // unique on the bus, never reused, by this run of the node or a later one
	Name      string // the client's name, from its Hello
	Cred      Cred
	Transport string // "shm" or "socket"
	Since     time.Time
	Groups    []string // groups it is subscribed to, sorted
	Names     []string // well-known names it owns, sorted

	Calls, Sends, Replies uint64 // requests it made to node services, and replies it got
	Events, Dropped       uint64 // events delivered to it, and dropped for it
	// EventWaits counts the events its handlers sent that waited for room
	// in its event ring (WithEventWait); EventWaitsExpired, those that
	// found none in time and took the queue's path.
	EventWaits, EventWaitsExpired uint64
	BytesIn, BytesOut             uint64
	Violations, Panics            uint64
	// LateReplies counts replies the node dropped on this connection's
	// account: results of its calls that came after it was gone or its
	// actor call was forgotten, and answers it gave peers that had given
	// up. (Replies it gave up on but got, the client counts itself.)
	LateReplies uint64
	Pending     int // its calls to peers waiting for a reply
	ActorCalls  int // its calls waiting for actor handlers (and node listings)

	// Bytes waiting in its rings, and the events the node holds for it
	// short of its event ring (queued behind the ring, or still in its
	// connection actor's mailbox).
	RequestFill, ResponseFill, EventFill, EventsQueued int
	RingBytes                                          [3]int // ring capacities: request, response, event
}

// GroupInfo describes a group.
type GroupInfo struct {
	Name      string
	Members   int
	Published uint64 // messages published to it while it existed
}

// NameInfo describes a well-known name: its owner and standby owners.
type NameInfo struct {
	Name    string
	Owner   string
	Standby []string
}

// NodeStats are the node's totals since it started.
type NodeStats struct {
	Name              string
	Started           time.Time
	Connections       int               // open now
	Accepted          uint64            // connections accepted since start
	HandshakesRefused uint64            // refused by WithAuthorize or the policy
	Refusals          map[Action]uint64 // refusals on every path, by action (connect: the handshakes above)
	// DescriptorsExhausted counts the times the node found no descriptor
	// free to accept or set up a connection (EMFILE, ENFILE); it refused
	// the client with a reason and went on serving.
	DescriptorsExhausted uint64
	Calls                uint64 // requests served by node services
	Events               uint64 // events offered through Node.SendEvent and Session.SendEvent
	Violations           uint64 // connections closed for breaking the protocol
	Evictions            uint64 // clients disconnected as slow consumers
	Dropped              uint64 // events dropped for slow clients
	Groups, Names        int    // groups with members, names owned
	Published            uint64 // group publications
	Delivered            uint64 // bus messages delivered to peers (direct, group, name)
	Undeliverable        uint64 // want-answer messages nobody could take
	// Unserved counts the frames clients wrote before they left (a
	// goodbye; with the socket transport, the socket's end) that the node
	// did not serve within its drain limit of 5 s (each logged at warn).
	Unserved uint64
	// LateReplies counts the replies the node dropped because their
	// caller had gone: handler results after the caller's connection
	// ended, actor answers after their call was forgotten (deadline,
	// cancel, end), and peer answers after the requester gave up. (A
	// handler's result after a cancel or deadline still goes out; the
	// client that gave up counts it, FlowControl.LateReplies.)
	LateReplies uint64
	// StuckHandlers counts the handlers still running for connections the
	// node released without them: they ignored their context (the node
	// logs each at warn). Close waits for them.
	StuckHandlers int
	// ActorPanics counts the panics of actor handlers (HandleActor).
	ActorPanics uint64
	// SpareSegments counts the shared-memory segments (each with its
	// doorbells) the node made ahead for the connections to come, none
	// ever given to a client: up to 4, from the first connection on.
	SpareSegments int
	// Direct peer channels (node_direct.go): open now; opened, refused
	// (policy, limit, a monitor, a peer without the feature), revoked (a
	// monitor, a policy change) and closed since start.
	DirectChannels                                           int
	DirectOpened, DirectRefused, DirectRevoked, DirectClosed uint64
	// DirectMarkersLost counts channels ended because the responder's
	// queue dropped their start marker (the caller's requests on them
	// failed at once with CODE_UNDELIVERABLE).
	DirectMarkersLost uint64
	// Procs is what the node's governor of the process's Ps did
	// (WithAdaptiveProcs; zero without it).
	Procs ProcsState
}

// NodeInfo describes a node, as its system service reports it (SysInfo).
type NodeInfo struct {
	Name, Version string
	PID           int32
	UID           uint32
	Started       time.Time
	Connections   uint32 // open when it answered
	Calls, Events uint64 // served and offered since it started
	Transport     Transport
}

// NodeInfo asks the node's system service for the node's description.
func (c *Conn) NodeInfo(ctx context.Context) (NodeInfo, error) {
	reply, err := c.Call(ctx, SystemService, SysInfo, nil)
	if err != nil {
		return NodeInfo{}, err
	}
	var ni pb.NodeInfo
	if err := gproto.Unmarshal(reply, &ni); err != nil {
		return NodeInfo{}, fmt.Errorf("%w: bad NodeInfo: %w", ErrProtocol, err)
	}
	t := TransportSHM
	if ni.GetTransportDefault() == pb.Transport_TRANSPORT_SOCKET {
		t = TransportSocket
	}
	return NodeInfo{Name: ni.GetName(), Version: ni.GetVersion(), PID: ni.GetPid(), UID: ni.GetUid(),
		Started: time.Unix(0, ni.GetStartedUnixNano()), Connections: ni.GetConnections(), Calls: ni.GetCalls(),
		Events: ni.GetEvents(), Transport: t}, nil
}

// ServiceInfo describes a service a node serves, as Conn.Services lists it.
type ServiceInfo struct {
	ID                uint16
	Name, Description string // as WithName and WithDescription gave them; may be empty
	Commands          []CommandInfo
	Actor             bool // served by an actor (HandleActor)
}

// CommandInfo describes a command of a service (WithCommand).
type CommandInfo struct {
	ID                uint16
	Name, Description string
}

// ClusterInfo is a node's view of its cluster, as its system service
// reports it (SysNodes, Conn.ClusterNodes, Node.ClusterNodes).
type ClusterInfo struct {
	Node, Incarnation string // this node's name and run (the one in its addresses)
	// Federated reports whether the node is joined to a cluster
	// (WithFederation); when false, nothing below is set.
	Federated bool
	Cluster   string // the cluster's name; "" if its Federation does not say
	// Discovery is how the node finds other nodes beyond its configured
	// peers, as the discovery describes itself (e.g. "etcd
	// http://10.0.0.1:2379"); "" for the peers only, or a Federation that
	// does not say (DiscoveryReporter).
	Discovery string
	// Links are the other nodes: those linked or linking, and the
	// addresses configured or learned that are not linked, by node name
	// (unknown names last) then address.
	Links []LinkInfo
}

// Up counts the other nodes whose link is up.
func (ci ClusterInfo) Up() int {
	n := 0
	for _, l := range ci.Links {
		if l.State == LinkUp {
			n++
		}
	}
	return n
}

// LinkState is the state of a node's link to another node.
type LinkState uint8

const (
	// LinkDown: not linked, never yet or since the last link there went
	// down (LinkInfo.Reason says why); the address is tried again.
	LinkDown LinkState = iota
	// LinkLinking: the node there answered; the exchange that brings the
	// link up is under way.
	LinkLinking
	// LinkUp: linked; messages flow.
	LinkUp
	// LinkRefused: the node there refused this one (LinkInfo.Reason says
	// why: another cluster, a name taken, the secret); it is not tried
	// again until it says hello itself.
	LinkRefused
)

var linkStateNames = [...]string{"down", "linking", "up", "refused"}

// String returns the state's name in lower case ("up").
func (s LinkState) String() string {
	if int(s) < len(linkStateNames) {
		return linkStateNames[s]
	}
	return fmt.Sprintf("linkstate(%d)", int(s))
}

// LinkInfo describes a node's link to another node.
type LinkInfo struct {
	// Node and Incarnation name the node there: "" while unknown (an
	// address that never answered). A node not linked keeps the name it
	// had when it last was.
	Node, Incarnation string
	Address           string // the address the node advertises (host:port)
	State             LinkState
	// Reason: for LinkRefused, why the node there refused this one; for
	// LinkDown, why the last link there ended ("" if none ever came up).
	Reason     string
	Configured bool // the address is one of this node's configured peers, or listed by its discovery; not learned
	Discovered bool // the cluster's discovery lists the address now (Configured is then true too)
	// Messages sent on the link and delivered from it, since it came up.
	Sent, Delivered uint64
	// Bytes sent and not yet acknowledged, against the link's byte
	// budget (sends past it are refused or close the link, as configured).
	Unacked, Budget int64
	// LastHeard is when the node there last sent anything (zero: never).
	LastHeard time.Time
}
