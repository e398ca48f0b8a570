package switchboard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// BusService is the service id of the bus operations (subscribe, own,
// listings); the client's methods call it for you.
const BusService = pb.BusService

// busOp serves a call to BusService, on the connection's pump.
func (n *Node) busOp(ctx context.Context, c *conn.Endpoint, r *conn.Incoming) conn.Result {
	refuse := func(err error) conn.Result {
		return conn.Result{Code: pb.Code_CODE_REFUSED, Payload: []byte(err.Error())}
	}
	invalid := func(err error) conn.Result {
		var e *Error
		if !errors.As(err, &e) {
			return conn.Result{Code: pb.Code_CODE_INVALID_ARGUMENT, Payload: []byte(err.Error())}
		}
		return conn.Result{Code: pb.Code(e.Code), Payload: []byte(e.Reason)}
	}
	who := credOf(c.Cred())
	switch r.Command {
	case pb.BusSubscribe, pb.BusSubscribeWithMembers:
		var m pb.BusGroup
		if err := gproto.Unmarshal(r.Payload, &m); err != nil {
			return invalid(err)
		}
		g := m.GetGroup()
		if err := checkName(g); err != nil {
			return invalid(err)
		}
		if err := n.allow(who, ActionSubscribe, g); err != nil {
			return refuse(err)
		}
		// A member list, and the notices of sys.*, tell who is connected:
		// the listing rule applies to them as to Members and Connections.
		if r.Command == pb.BusSubscribeWithMembers {
			if err := n.allow(who, ActionList, g); err != nil {
				return refuse(err)
			}
		}
		if reserved(g) {
			if err := n.allow(who, ActionList, ""); err != nil {
				return refuse(err)
			}
		}
		if err := n.reg.Groups().Join(g, c, r.ID, r.Command == pb.BusSubscribeWithMembers); err != nil {
			return conn.Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte(err.Error())}
		}
		return conn.Result{Pending: true}
	case pb.BusUnsubscribe:
		var m pb.BusName
		if err := gproto.Unmarshal(r.Payload, &m); err != nil {
			return invalid(err)
		}
		n.reg.Groups().Leave(m.GetName(), c, r.ID)
		return conn.Result{Pending: true}
	case pb.BusOwn, pb.BusRelease:
		var m pb.BusName
		if err := gproto.Unmarshal(r.Payload, &m); err != nil {
			return invalid(err)
		}
		if err := checkName(m.GetName()); err != nil {
			return invalid(err)
		}
		if r.Command == pb.BusOwn {
			if err := n.allow(who, ActionOwn, m.GetName()); err != nil {
				return refuse(err)
			}
			n.reg.Own(c, m.GetName(), r.ID)
		} else {
			n.reg.Release(c, m.GetName(), r.ID)
		}
		return conn.Result{Pending: true}
	case pb.BusMembers:
		var m pb.BusName
		if err := gproto.Unmarshal(r.Payload, &m); err != nil {
			return invalid(err)
		}
		if err := n.allow(who, ActionList, m.GetName()); err != nil {
			return refuse(err)
		}
		list := &pb.MemberList{}
		for _, mc := range n.reg.Groups().Members(m.GetName()) {
			list.Members = append(list.Members, mc.Member())
		}
		if n.fed != nil { // then its members on the other nodes
			list.Members = append(list.Members, n.fed.remoteMembers(m.GetName())...)
		}
		return marshalResult(list)
	case pb.BusGroups:
		if err := n.allow(who, ActionList, ""); err != nil {
			return refuse(err)
		}
		list := &pb.GroupList{}
		for _, g := range n.reg.Groups().List() {
			list.Groups = append(list.Groups, &pb.GroupInfo{Name: g.Name, Members: uint32(g.Members)})
		}
		return marshalResult(list)
	case pb.BusSync: // nothing to do: answered in order (Conn.Flush)
		return conn.Result{}
	case pb.BusDirectOpen:
		return n.directOpen(c, r.Payload)
	case pb.BusDirectStart:
		return n.directStart(c, r.Payload)
	case pb.BusDirectClose:
		return n.directClose(c, r.Payload)
	case pb.BusMonitor:
		var m pb.BusWatch
		if err := gproto.Unmarshal(r.Payload, &m); err != nil {
			return invalid(err)
		}
		if err := n.allow(who, ActionMonitor, ""); err != nil {
			return refuse(err)
		}
		n.addMonitor(c, m.GetTargets())
		return conn.Result{}
	case pb.BusNames, pb.BusConnections:
		if err := n.allow(who, ActionList, ""); err != nil {
			return refuse(err)
		}
		// The registry answers on a channel; waiting for it off the pump
		// keeps this connection's other traffic moving.
		id := r.ID
		cmd := r.Command
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			var res conn.Result
			if cmd == pb.BusNames {
				res = marshalResult(&pb.NameList{Names: n.listNames()})
			} else {
				list := &pb.ConnectionList{}
				for _, ci := range n.Connections() {
					list.Connections = append(list.Connections, ci.proto())
				}
				if n.fed != nil { // then the other nodes' (transport "remote")
					list.Connections = append(list.Connections, n.fed.listConns()...)
				}
				res = marshalResult(list)
			}
			c.Complete(id, res)
		}()
		return conn.Result{Pending: true}
	}
	return conn.Result{Code: pb.Code_CODE_UNKNOWN_COMMAND, Payload: []byte(fmt.Sprintf("no bus command %d", r.Command))}
}

func marshalResult(m gproto.Message) conn.Result {
	b, err := gproto.Marshal(m)
	if err != nil {
		return conn.Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte(err.Error())}
	}
	return conn.Result{Payload: b}
}

func (n *Node) listNames() []*pb.NameInfo {
	l, _ := n.reg.ListNames(5 * time.Second)
	return l
}

// Groups lists the groups with members, by name.
func (n *Node) Groups() []GroupInfo {
	var out []GroupInfo
	for _, g := range n.reg.Groups().List() {
		gi := GroupInfo{Name: g.Name, Members: g.Members}
		if h := n.reg.Groups().Handle(g.Name); h != nil {
			gi.Published = h.Published.Load()
		}
		out = append(out, gi)
	}
	return out
}

// Members lists a group's members (addresses), by connection id.
func (n *Node) Members(group string) []string {
	var out []string
	for _, c := range n.reg.Groups().Members(group) {
		out = append(out, c.Address())
	}
	return out
}

// Names lists the owned names, by name.
func (n *Node) Names() []NameInfo {
	var out []NameInfo
	for _, ni := range n.listNames() {
		out = append(out, NameInfo{Name: ni.GetName(), Owner: ni.GetOwner(), Standby: ni.GetStandby()})
	}
	return out
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
