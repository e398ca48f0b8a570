package switchboard

import (
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Reserved groups: the node publishes notices on them (payloads are
// pb.Notice messages; see Event.Notice). Clients subscribe to them like to
// any other group, and may not publish to them.
const (
	// GroupConnections: connected and disconnected notices.
	GroupConnections = pb.GroupConnections
	// GroupGroups: subscribed and unsubscribed notices, for every group.
	GroupGroups = pb.GroupGroups
	// GroupNames: name owner changes.
	GroupNames = pb.GroupNames
)

// EventKind says what an Event is.
type EventKind int

const (
	// EventService: an event from a node service (Service, Command set).
	EventService EventKind = iota
	// EventMessage: a message from a peer, sent to this client's address
	// or to a name it owns (From, To set).
	EventMessage
	// EventGroup: a message published to a group this client belongs to
	// (From, and To: the group).
	EventGroup
	// EventRequest: a request from a peer, to be answered with Reply (only
	// without WithRequestHandler or WithRequestActor, which take them).
	EventRequest
	// EventNotice: a notice from the node (To: the reserved group, or this
	// client's address); see Notice.
	EventNotice
	// EventMonitor: a copy of a message between other clients, for a
	// monitor (see Monitor); Monitored says what it was.
	EventMonitor
	// EventDisconnected: with WithReconnect, the node went away and the
	// Conn redials it; Reconnection says why, and the address it had.
	EventDisconnected
	// EventReconnected: with WithReconnect, the Conn is back and has
	// restored what it could; Reconnection says what.
	EventReconnected
)

// Notice types, re-exported from the protocol.
type (
	// NoticeKind says what a Notice announces.
	NoticeKind = pb.NoticeKind
	// DisconnectReason says why a connection ended.
	DisconnectReason = pb.DisconnectReason
)

// Notice kinds.
const (
	NoticeConnected        = pb.NoticeKind_NOTICE_CONNECTED
	NoticeDisconnected     = pb.NoticeKind_NOTICE_DISCONNECTED
	NoticeSubscribed       = pb.NoticeKind_NOTICE_SUBSCRIBED
	NoticeUnsubscribed     = pb.NoticeKind_NOTICE_UNSUBSCRIBED
	NoticeNameOwnerChanged = pb.NoticeKind_NOTICE_NAME_OWNER_CHANGED
	NoticeNameAcquired     = pb.NoticeKind_NOTICE_NAME_ACQUIRED
	NoticeNameLost         = pb.NoticeKind_NOTICE_NAME_LOST
	// NoticeNodeJoined and NoticeNodeLeft, on GroupNodes: a node of the
	// cluster joined or left (Notice.Node, Notice.Incarnation; Detail
	// says why it left).
	NoticeNodeJoined = pb.NoticeKind_NOTICE_NODE_JOINED
	NoticeNodeLeft   = pb.NoticeKind_NOTICE_NODE_LEFT
)

// GroupNodes is the reserved group of cluster notices: NoticeNodeJoined
// and NoticeNodeLeft.
const GroupNodes = pb.GroupNodes

// Disconnect reasons.
const (
	DisconnectClosed    = pb.DisconnectReason_DISCONNECT_CLOSED
	DisconnectLost      = pb.DisconnectReason_DISCONNECT_LOST
	DisconnectEvicted   = pb.DisconnectReason_DISCONNECT_EVICTED
	DisconnectViolation = pb.DisconnectReason_DISCONNECT_VIOLATION
	DisconnectShutdown  = pb.DisconnectReason_DISCONNECT_SHUTDOWN
	// DisconnectNodeLost: the connection was on another node of the
	// cluster, and the link to that node was lost. If that node was only
	// cut off or paused, not restarted, the connection is announced
	// connected again, under the same address, once the link is back
	// (before anything it sends then): the one disconnection that is not
	// final.
	DisconnectNodeLost = pb.DisconnectReason_DISCONNECT_NODE_LOST
)

// Member is a connection as the bus lists it.
type Member struct {
	Address    string
	ClientName string
	Cred       Cred
}

func memberOf(m *pb.Member) Member {
	return Member{Address: m.GetAddress(), ClientName: m.GetClientName(),
		Cred: Cred{UID: m.GetUid(), GID: m.GetGid(), PID: m.GetPid(), Node: m.GetNode()}}
}

// Notice is what the node announces about the bus.
type Notice struct {
	Kind     NoticeKind
	Member   Member // the connection concerned (for name changes: the new owner)
	Group    string // (un)subscribed
	Name     string // name notices
	OldOwner string // name notices: addresses, "" for none
	NewOwner string
	Reason   DisconnectReason // disconnected, and unsubscribed by a disconnection
	Detail   string
	// Node and Incarnation: the node, for NoticeNodeJoined and
	// NoticeNodeLeft.
	Node, Incarnation string
}
