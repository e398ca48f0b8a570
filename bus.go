package switchboard

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/group"
	"github.com/switchboard-ipc/switchboard/actors/registry"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Reserved groups: the node publishes notices on them (payloads are
// pb.Notice messages; see Event.Notice). Clients subscribe to them like to
// any other group, and may not publish to them.
const (
	// GroupConnections: connected and disconnected notices.
	GroupConnections = registry.Connections
	// GroupGroups: subscribed and unsubscribed notices, for every group.
	GroupGroups = registry.Groups
	// GroupNames: name owner changes.
	GroupNames = registry.Names
)

// BusService is the service id of the bus operations (subscribe, own,
// listings); the client's methods call it for you.
const BusService = pb.BusService

// WithMaxPending bounds the replies from peers one connection may wait for
// at once (default 4096); past it, Request and RequestGroup fail with
// ErrTooManyPending.
func WithMaxPending(n int) NodeOption {
	return func(o *nodeOptions) error {
		if n <= 0 {
			return fmt.Errorf("switchboard: max pending %d must be positive", n)
		}
		o.maxPending = n
		return nil
	}
}

// checkName validates a group or a well-known name: 1 to 255 bytes,
// printable ASCII without spaces, not starting with ':' (addresses do).
func checkName(s string) error {
	if len(s) == 0 || len(s) > pb.MaxNameLen {
		return pb.Code_CODE_INVALID_ARGUMENT.Err(fmt.Sprintf("name %q: must be 1 to %d bytes", s, pb.MaxNameLen))
	}
	if s[0] == ':' {
		return pb.Code_CODE_INVALID_ARGUMENT.Err(fmt.Sprintf("name %q: ':' starts addresses, not names", s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return pb.Code_CODE_INVALID_ARGUMENT.Err(fmt.Sprintf("name %q: byte %d is not printable ASCII", s, i))
		}
	}
	return nil
}

func reserved(group string) bool { return strings.HasPrefix(group, "sys.") }

// member describes a connection in notices and listings.
func member(c *conn.Endpoint) *pb.Member {
	cr := c.Cred()
	return &pb.Member{Address: c.Address(), ClientName: c.Name(), Uid: cr.UID, Gid: cr.GID, Pid: cr.PID}
}

// initBus sets up the group directory and the registry's callbacks.
func (n *Node) initBus() (registry.Config, group.Config) {
	gc := group.Config{
		System: n.sys,
		Spawn:  n.spawn,
		Member: member,
		Announce: func(ch group.Change) {
			n.sys.Root.Send(n.registry, &registry.Changed{Change: ch})
		},
	}
	rc := registry.Config{
		Member: member,
		Publish: func(g string, nt *pb.Notice) {
			ms := n.dir.Members(g)
			if len(ms) == 0 {
				return
			}
			b, _ := gproto.Marshal(nt)
			body := pb.AppendMsg(nil, "", g, nil, b)
			for _, m := range ms {
				m.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: body}})
			}
		},
		Tell: func(c *conn.Endpoint, nt *pb.Notice) {
			b, _ := gproto.Marshal(nt)
			c.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: pb.AppendMsg(nil, "", c.Address(), nil, b)}})
		},
		SetNames: func(t map[string]*conn.Endpoint) { n.names.Store(&t) },
	}
	return rc, gc
}

// lookupAddress finds a live connection by address (":node.id").
func (n *Node) lookupAddress(addr string) *conn.Endpoint {
	rest, ok := strings.CutPrefix(addr, ":"+n.o.name+".")
	if !ok {
		return nil
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return nil
	}
	if c, ok := n.byID.Load(id); ok {
		return c.(*conn.Endpoint)
	}
	return nil
}

// resolve finds the connection a direct message or request goes to: an
// address, or a name's owner. It checks the policy for the destination as
// given and, for a name, for the owner's address too, so that a name is no
// way around a rule on an address.
func (n *Node) resolve(from *conn.Endpoint, dest string) (*conn.Endpoint, error) {
	if err := n.allow(from.Cred(), ActionSend, dest); err != nil {
		return nil, pb.Code_CODE_REFUSED.Err(err.Error())
	}
	var to *conn.Endpoint
	if strings.HasPrefix(dest, ":") {
		to = n.lookupAddress(dest)
	} else if t := n.names.Load(); t != nil {
		to = (*t)[dest]
		if to != nil {
			if err := n.allow(from.Cred(), ActionSend, to.Address()); err != nil {
				return nil, pb.Code_CODE_REFUSED.Err(err.Error())
			}
		}
	}
	if to == nil || to.Context().Err() != nil {
		return nil, pb.Code_CODE_UNDELIVERABLE.Err(fmt.Sprintf("nobody at %q", dest))
	}
	return to, nil
}

// monitor is a connection that watches the bus's traffic.
type monitor struct {
	c       *conn.Endpoint
	targets map[string]bool // nil: everything
}

// addMonitor makes c a monitor of targets (replacing its earlier ones).
func (n *Node) addMonitor(c *conn.Endpoint, targets []string) {
	m := monitor{c: c}
	if len(targets) > 0 {
		m.targets = map[string]bool{}
		for _, t := range targets {
			m.targets[t] = true
		}
	}
	n.monMu.Lock()
	defer n.monMu.Unlock()
	var ms []monitor
	if p := n.monitors.Load(); p != nil {
		for _, o := range *p {
			if o.c != c {
				ms = append(ms, o)
			}
		}
	}
	ms = append(ms, m)
	n.monitors.Store(&ms)
}

// dropMonitor forgets a connection that ended.
func (n *Node) dropMonitor(c *conn.Endpoint) {
	n.monMu.Lock()
	defer n.monMu.Unlock()
	p := n.monitors.Load()
	if p == nil {
		return
	}
	var ms []monitor
	for _, o := range *p {
		if o.c != c {
			ms = append(ms, o)
		}
	}
	n.monitors.Store(&ms)
}

// copyToMonitors gives every monitor watching from, dest or one of to a
// copy of a message. A monitor's copies go through the same bounded queue
// as its other events: one that cannot keep up loses copies (and sees the
// gap in Event.Dropped); the sender never waits for it.
func (n *Node) copyToMonitors(c *conn.Endpoint, kind uint16, dest string, to []*conn.Endpoint, payload []byte) {
	p := n.monitors.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	var body []byte
	for _, m := range *p {
		if m.c == c {
			continue
		}
		if m.targets != nil && !m.targets[c.Address()] && !m.targets[dest] && !anyAddress(m.targets, to) {
			continue
		}
		if body == nil {
			body = pb.AppendMsg(nil, c.Address(), dest, nil, payload)
		}
		if len(body) > m.c.MaxEvent() { // more than this monitor takes: a gap, not a broken connection
			m.c.CountDrop()
			continue
		}
		c.Deliver(m.c, &conn.Delivery{Service: pb.BusService, Command: pb.MsgMonitor + kind, Payload: body})
	}
}

func anyAddress(set map[string]bool, cs []*conn.Endpoint) bool {
	for _, c := range cs {
		if set[c.Address()] {
			return true
		}
	}
	return false
}

// route handles a client's bus frame, on its pump.
func (n *Node) route(c *conn.Endpoint, f conn.BusFrame) {
	dest, payload, err := pb.CutDest(f.Body)
	wantAnswer := f.Flags&pb.FlagWantAnswer != 0 || f.Kind == pb.KindPeerCall || f.Kind == pb.KindGroupCall
	fail := func(err error) {
		if e, ok := err.(*pb.Error); ok && e.Code == pb.Code_CODE_UNDELIVERABLE {
			n.undeliverable.Add(1)
		}
		if wantAnswer {
			e, _ := err.(*pb.Error)
			if e == nil {
				e = &pb.Error{Code: pb.Code_CODE_INTERNAL, Reason: err.Error()}
			}
			c.Fail(f.ID, e.Code, e.Reason)
		}
	}
	if err != nil {
		fail(pb.Code_CODE_INVALID_ARGUMENT.Err("bus frame without a destination"))
		return
	}
	d := string(dest)
	switch f.Kind {
	case pb.KindPeerSend, pb.KindPeerCall:
		to, err := n.resolve(c, d)
		if err != nil {
			fail(err)
			return
		}
		if f.Kind == pb.KindPeerSend {
			if need := pb.MsgPrefixLen(c.Address(), d, false) + len(payload); need > to.MaxEvent() {
				fail(pb.Code_CODE_TOO_LARGE.Err(fmt.Sprintf("%d bytes: more than %s takes (%d)", need, d, to.MaxEvent())))
				return
			}
		}
		n.delivered.Add(1)
		n.copyToMonitors(c, f.Kind, d, []*conn.Endpoint{to}, payload)
		if f.Kind == pb.KindPeerCall {
			c.StartRequest(f.ID, f.Aux, false, []*conn.Endpoint{to}, pb.AppendMsg(nil, c.Address(), d, c.ReplyHandle(f.ID), payload))
			return
		}
		c.Deliver(to, &conn.Delivery{Service: pb.BusService, Command: pb.MsgDirect, Payload: pb.AppendMsg(nil, c.Address(), d, nil, payload)})
		if wantAnswer {
			c.Answer(f.ID, binary.LittleEndian.AppendUint32(nil, 1))
		}
	case pb.KindPublish, pb.KindGroupCall:
		if err := checkName(d); err != nil {
			fail(err)
			return
		}
		if reserved(d) {
			fail(pb.Code_CODE_REFUSED.Err(fmt.Sprintf("group %q is the node's", d)))
			return
		}
		if err := n.allow(c.Cred(), ActionPublish, d); err != nil {
			fail(pb.Code_CODE_REFUSED.Err(err.Error()))
			return
		}
		members, h := n.dir.Lookup(d) // the recipients: the members at this instant
		echo := f.Kind == pb.KindPublish && f.Flags&pb.FlagEcho != 0
		count := len(members)
		if !echo && slices.Contains(members, c) {
			count--
		}
		if h != nil {
			h.Published.Add(1)
		}
		n.published.Add(1)
		if count == 0 {
			fail(pb.Code_CODE_UNDELIVERABLE.Err(fmt.Sprintf("group %q has no other member", d)))
			return
		}
		n.delivered.Add(uint64(count))
		n.copyToMonitors(c, f.Kind, d, nil, payload)
		if f.Kind == pb.KindGroupCall {
			targets := make([]*conn.Endpoint, 0, count)
			for _, m := range members {
				if m != c {
					targets = append(targets, m)
				}
			}
			c.StartRequest(f.ID, f.Aux, true, targets, pb.AppendMsg(nil, c.Address(), d, c.ReplyHandle(f.ID), payload))
			return
		}
		body := pb.AppendMsg(nil, c.Address(), d, nil, payload)
		took := 0
		for _, t := range members {
			if t == c && !echo {
				continue
			}
			if len(body) > t.MaxEvent() {
				t.CountDrop() // a member that cannot take it sees a gap
				continue
			}
			took++
			c.Deliver(t, &conn.Delivery{Service: pb.BusService, Command: pb.MsgGroup, Payload: body})
		}
		if wantAnswer {
			if took == 0 {
				fail(pb.Code_CODE_TOO_LARGE.Err(fmt.Sprintf("%d bytes: more than any member takes", len(body))))
				return
			}
			c.Answer(f.ID, binary.LittleEndian.AppendUint32(nil, uint32(took)))
		}
	}
}

// busOp serves a call to BusService, on the connection's pump.
func (n *Node) busOp(ctx context.Context, c *conn.Endpoint, r *conn.Incoming) conn.Result {
	refuse := func(err error) conn.Result {
		return conn.Result{Code: pb.Code_CODE_REFUSED, Payload: []byte(err.Error())}
	}
	invalid := func(err error) conn.Result {
		e, _ := err.(*pb.Error)
		if e == nil {
			return conn.Result{Code: pb.Code_CODE_INVALID_ARGUMENT, Payload: []byte(err.Error())}
		}
		return conn.Result{Code: e.Code, Payload: []byte(e.Reason)}
	}
	who := c.Cred()
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
		if err := n.dir.Join(g, c, r.ID, r.Command == pb.BusSubscribeWithMembers); err != nil {
			return conn.Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte(err.Error())}
		}
		return conn.Result{Pending: true}
	case pb.BusUnsubscribe:
		var m pb.BusName
		if err := gproto.Unmarshal(r.Payload, &m); err != nil {
			return invalid(err)
		}
		n.dir.Leave(m.GetName(), c, r.ID)
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
			n.sys.Root.Send(n.registry, &registry.Own{Conn: c, Name: m.GetName(), ID: r.ID})
		} else {
			n.sys.Root.Send(n.registry, &registry.Release{Conn: c, Name: m.GetName(), ID: r.ID})
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
		for _, mc := range n.dir.Members(m.GetName()) {
			list.Members = append(list.Members, member(mc))
		}
		return marshalResult(list)
	case pb.BusGroups:
		if err := n.allow(who, ActionList, ""); err != nil {
			return refuse(err)
		}
		list := &pb.GroupList{}
		for _, g := range n.dir.List() {
			list.Groups = append(list.Groups, &pb.GroupInfo{Name: g.Name, Members: uint32(g.Members)})
		}
		return marshalResult(list)
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
	reply := make(chan []*pb.NameInfo, 1)
	n.sys.Root.Send(n.registry, &registry.ListNames{Reply: reply})
	select {
	case l := <-reply:
		return l
	case <-time.After(5 * time.Second):
		return nil
	}
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

// Groups lists the groups with members, by name.
func (n *Node) Groups() []GroupInfo {
	var out []GroupInfo
	for _, g := range n.dir.List() {
		gi := GroupInfo{Name: g.Name, Members: g.Members}
		if h := n.dir.Handle(g.Name); h != nil {
			gi.Published = h.Published.Load()
		}
		out = append(out, gi)
	}
	return out
}

// GroupInfo describes a group.
type GroupInfo struct {
	Name      string
	Members   int
	Published uint64 // messages published to it while it existed
}

// Members lists a group's members (addresses), by connection id.
func (n *Node) Members(group string) []string {
	var out []string
	for _, c := range n.dir.Members(group) {
		out = append(out, c.Address())
	}
	return out
}

// NameInfo describes a well-known name: its owner and standby owners.
type NameInfo struct {
	Name    string
	Owner   string
	Standby []string
}

// Names lists the owned names, by name.
func (n *Node) Names() []NameInfo {
	var out []NameInfo
	for _, ni := range n.listNames() {
		out = append(out, NameInfo{Name: ni.GetName(), Owner: ni.GetOwner(), Standby: ni.GetStandby()})
	}
	return out
}

// disconnectReason maps why a connection ended to its announced reason.
func disconnectReason(why conn.Reason) pb.DisconnectReason { return why.Disconnect() }
