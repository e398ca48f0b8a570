package registry

import (
	"cmp"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/group"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Reserved groups on which the registry publishes its notices.
const (
	Connections = "sys.connections" // connected, disconnected
	Groups      = "sys.groups"      // subscribed, unsubscribed
	Names       = "sys.names"       // name owner changed
)

// Entry describes a live connection.
type Entry struct {
	ID      uint64
	Address string
	Since   time.Time
	PID     *actor.PID     // the connection's actor, watched by the registry
	Conn    *conn.Endpoint // name, credentials, counters (nil in tests)
	Groups  []string       // in List's answer: its groups, sorted
	Names   []string       // in List's answer: the names it owns, sorted
}

// Messages the registry accepts.
type (
	// Register adds a connection and announces it, then closes Done if
	// set (the node waits for it, so that the connection's own doings
	// come after its arrival in every order).
	Register struct {
		Entry Entry
		Done  chan struct{}
	}
	// Unregister removes a connection and announces why: first that it
	// left each of its groups, then the names it owned changing hands,
	// then its disconnection.
	Unregister struct {
		ID     uint64
		Reason pb.DisconnectReason
		Detail string
	}
	// Changed reports a group's membership change, to announce.
	Changed struct{ Change group.Change }
	// Own asks for a well-known name for Conn; the registry answers Conn's
	// call ID with an OwnReply.
	Own struct {
		Conn *conn.Endpoint
		Name string
		ID   uint64
	}
	// Release gives up a name, or a place in its queue, and answers ID.
	Release struct {
		Conn *conn.Endpoint
		Name string
		ID   uint64
	}
	// List asks for every entry, in id order, on Reply (buffered, one).
	List struct{ Reply chan<- []Entry }
	// ListNames asks for the owned names, by name, on Reply (buffered, one).
	ListNames struct{ Reply chan<- []*pb.NameInfo }
	// Lookup asks for one entry on Reply (buffered, one); ok is false if
	// there is none.
	Lookup struct {
		ID    uint64
		Reply chan<- LookupResult
	}
	// LookupResult answers Lookup.
	LookupResult struct {
		Entry Entry
		OK    bool
	}
)

// Config is what the registry needs from the node.
type Config struct {
	// Publish sends a notice to the members of a reserved group.
	Publish func(group string, n *pb.Notice)
	// Tell sends a notice to one connection.
	Tell func(c *conn.Endpoint, n *pb.Notice)
	// Member describes a connection in notices.
	Member func(c *conn.Endpoint) *pb.Member
	// SetNames receives the name table after every change: name → owner.
	SetNames func(map[string]*conn.Endpoint)
}

type entry struct {
	Entry
	groups map[string]bool
	names  map[string]bool // owned or queued for
}

// Registry is the registry actor's state: the connections, the groups
// each belongs to, and the well-known names with their standby queues.
// It is the one source of notices on sys.*, so an observer sees them in
// one order.
type Registry struct {
	cfg   Config
	byID  map[uint64]*entry
	byPID map[string]uint64           // actor id -> connection id, for Terminated
	names map[string][]*conn.Endpoint // owner first, then standbys
}

// New returns a registry actor producer.
func New(cfg Config) actor.Producer {
	return func() actor.Actor {
		return &Registry{cfg: cfg, byID: map[uint64]*entry{}, byPID: map[string]uint64{}, names: map[string][]*conn.Endpoint{}}
	}
}

// Receive handles one message.
func (r *Registry) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *Register:
		e := &entry{Entry: m.Entry, groups: map[string]bool{}, names: map[string]bool{}}
		r.byID[m.Entry.ID] = e
		if pid := m.Entry.PID; pid != nil {
			r.byPID[pid.Id] = m.Entry.ID
			c.Watch(pid)
		}
		if e.Conn != nil {
			r.publish(Connections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_CONNECTED, Member: r.cfg.Member(e.Conn)})
		}
		if m.Done != nil {
			close(m.Done)
		}
	case *Unregister:
		r.remove(c, m.ID, m.Reason, m.Detail)
	case *actor.Terminated:
		// A connection's Unregister follows its actor's end and says why;
		// an entry without a connection (tests) goes now.
		if id, ok := r.byPID[m.Who.Id]; ok && r.byID[id].Conn == nil {
			r.remove(c, id, pb.DisconnectReason_DISCONNECT_UNSPECIFIED, "")
		}
	case *Changed:
		r.changed(m.Change)
	case *Own:
		m.Conn.Complete(m.ID, r.own(m.Conn, m.Name))
	case *Release:
		r.release(m.Conn, m.Name)
		m.Conn.Complete(m.ID, conn.Result{})
	case *List:
		out := make([]Entry, 0, len(r.byID))
		for _, e := range r.byID {
			x := e.Entry
			x.Groups = sortedKeys(e.groups, nil)
			x.Names = sortedKeys(e.names, func(n string) bool { return r.names[n][0] == e.Conn })
			out = append(out, x)
		}
		slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
		m.Reply <- out
	case *ListNames:
		out := make([]*pb.NameInfo, 0, len(r.names))
		for name, q := range r.names {
			ni := &pb.NameInfo{Name: name, Owner: q[0].Address()}
			for _, s := range q[1:] {
				ni.Standby = append(ni.Standby, s.Address())
			}
			out = append(out, ni)
		}
		slices.SortFunc(out, func(a, b *pb.NameInfo) int { return cmp.Compare(a.Name, b.Name) })
		m.Reply <- out
	case *Lookup:
		e, ok := r.byID[m.ID]
		if !ok {
			m.Reply <- LookupResult{}
			return
		}
		m.Reply <- LookupResult{e.Entry, true}
	}
}

func (r *Registry) publish(group string, n *pb.Notice) {
	if r.cfg.Publish != nil {
		r.cfg.Publish(group, n)
	}
}

// changed announces a membership change of a connection still registered.
func (r *Registry) changed(ch group.Change) {
	if ch.Done != nil {
		defer ch.Done()
	}
	e := r.byID[ch.Conn.ID()]
	if e == nil || e.groups[ch.Group] == ch.Joined {
		return // gone already (its disconnection announced it), or no change
	}
	n := &pb.Notice{Member: r.cfg.Member(ch.Conn), Group: ch.Group}
	if ch.Joined {
		e.groups[ch.Group] = true
		n.Kind = pb.NoticeKind_NOTICE_SUBSCRIBED
	} else {
		delete(e.groups, ch.Group)
		n.Kind = pb.NoticeKind_NOTICE_UNSUBSCRIBED
		if ch.Lost { // its actor ended: the connection's reason is settled
			n.Reason, n.Detail = ch.Conn.Why().Disconnect(), "disconnected"
		}
	}
	r.publish(Groups, n)
}

// own gives name to c, or queues c for it.
func (r *Registry) own(c *conn.Endpoint, name string) conn.Result {
	e := r.byID[c.ID()]
	if e == nil {
		return conn.Result{Code: pb.Code_CODE_PEER_GONE, Payload: []byte("connection ending")}
	}
	q := r.names[name]
	pos := slices.Index(q, c)
	if pos < 0 {
		q = append(q, c)
		r.names[name] = q
		e.names[name] = true
		pos = len(q) - 1
		if pos == 0 {
			r.handover(name, nil, c, "")
		}
	}
	b, _ := gproto.Marshal(&pb.OwnReply{Primary: pos == 0, Position: uint32(pos)})
	return conn.Result{Payload: b}
}

// release takes c out of name's queue; if it owned the name, the next in
// line gets it.
func (r *Registry) release(c *conn.Endpoint, name string) {
	q := r.names[name]
	pos := slices.Index(q, c)
	if pos < 0 {
		return
	}
	if e := r.byID[c.ID()]; e != nil {
		delete(e.names, name)
	}
	q = slices.Delete(q, pos, pos+1)
	if len(q) == 0 {
		delete(r.names, name)
	} else {
		r.names[name] = q
	}
	if pos == 0 {
		var next *conn.Endpoint
		if len(q) > 0 {
			next = q[0]
		}
		r.handover(name, c, next, "")
	}
}

// handover announces a name's new owner (nil: none) and updates the table.
func (r *Registry) handover(name string, old, next *conn.Endpoint, detail string) {
	if r.cfg.SetNames != nil {
		t := make(map[string]*conn.Endpoint, len(r.names))
		for n, q := range r.names {
			t[n] = q[0]
		}
		r.cfg.SetNames(t)
	}
	n := &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_OWNER_CHANGED, Name: name, Detail: detail}
	if old != nil {
		n.OldOwner = old.Address()
	}
	if next != nil {
		n.NewOwner = next.Address()
		n.Member = r.cfg.Member(next)
	}
	r.publish(Names, n)
	if r.cfg.Tell == nil {
		return
	}
	if old != nil && old.Context().Err() == nil {
		r.cfg.Tell(old, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_LOST, Name: name, OldOwner: n.OldOwner, NewOwner: n.NewOwner})
	}
	if next != nil {
		r.cfg.Tell(next, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_ACQUIRED, Name: name, OldOwner: n.OldOwner, NewOwner: n.NewOwner})
	}
}

func (r *Registry) remove(c actor.Context, id uint64, why pb.DisconnectReason, detail string) {
	e, ok := r.byID[id]
	if !ok {
		return
	}
	if e.Conn != nil {
		for _, g := range sortedKeys(e.groups, nil) {
			r.publish(Groups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_UNSUBSCRIBED, Member: r.cfg.Member(e.Conn), Group: g,
				Reason: why, Detail: "disconnected"})
		}
		for _, name := range sortedKeys(e.names, nil) {
			r.release(e.Conn, name)
		}
		r.publish(Connections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_DISCONNECTED, Member: r.cfg.Member(e.Conn), Reason: why, Detail: detail})
	}
	delete(r.byID, id)
	if pid := e.PID; pid != nil {
		delete(r.byPID, pid.Id)
		c.Unwatch(pid)
	}
}

func sortedKeys(m map[string]bool, keep func(string) bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if keep == nil || keep(k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
