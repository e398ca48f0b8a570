package switchboard

import (
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

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

func connInfo(c *conn.Endpoint) ConnInfo {
	st := c.Stats()
	ci := ConnInfo{ID: c.ID(), Address: c.Address(), Name: c.Name(), Cred: Cred(c.Cred()), Transport: c.Transport(), Since: c.Since(),
		Calls: st.Calls.Load(), Sends: st.Sends.Load(), Replies: st.Replies.Load(),
		Events: st.Events.Load(), Dropped: st.EventsDropped.Load(),
		BytesIn: st.BytesIn.Load(), BytesOut: st.BytesOut.Load(),
		Violations: st.Violations.Load(), Panics: st.Panics.Load(), RingBytes: c.RingBytes()}
	ci.RequestFill, ci.ResponseFill, ci.EventFill, ci.EventsQueued = c.Fill()
	ci.Pending = c.Waiting()
	return ci
}

func (ci *ConnInfo) proto() *pb.ConnectionInfo {
	return &pb.ConnectionInfo{
		Member:    &pb.Member{Address: ci.Address, ClientName: ci.Name, Uid: ci.Cred.UID, Gid: ci.Cred.GID, Pid: ci.Cred.PID},
		Groups:    ci.Groups,
		Names:     ci.Names,
		Transport: ci.Transport, SinceUnixNano: ci.Since.UnixNano(),
		Calls: ci.Calls, Sends: ci.Sends, Events: ci.Events, Dropped: ci.Dropped,
		BytesIn: ci.BytesIn, BytesOut: ci.BytesOut, Pending: uint32(ci.Pending),
		RequestFill: uint32(ci.RequestFill), ResponseFill: uint32(ci.ResponseFill), EventFill: uint32(ci.EventFill),
		EventsQueued: uint32(ci.EventsQueued),
	}
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
