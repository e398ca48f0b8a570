package registry

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/group"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Registry is the node's one table of live connections, and the actor
// that announces what happens to them. Lookups by id and by well-known
// name read lock-free tables (the routing hot path); everything else is a
// message to the actor, handled one at a time. Safe for concurrent use.
type Registry struct {
	sys   *actor.ActorSystem
	pid   *actor.PID
	dir   *group.Dir
	byID  sync.Map // connection id → *conn.Endpoint: Add to Remove
	count atomic.Int64
	names atomic.Pointer[map[string]*conn.Endpoint] // name → owner; replaced by the actor on every change
	// remote: name → its owner's address on another node (with an
	// Arbiter, arbiter.go); replaced likewise.
	remote atomic.Pointer[map[string]string]
}

// Start spawns the registry's actor with sp, and the directory of groups
// whose changes it announces.
func Start(sys *actor.ActorSystem, sp conn.Spawner) (*Registry, error) {
	r := &Registry{sys: sys}
	a := &table{r: r, byID: map[uint64]*entry{}, names: map[string][]*conn.Endpoint{}, words: map[string]*word{}}
	pid, err := sp.SpawnChild(actor.PropsFromProducer(func() actor.Actor { return a }), "registry")
	if err != nil {
		return nil, err
	}
	r.pid = pid
	r.dir = group.NewDir(group.Config{System: sys, Spawner: sp, Announcer: pid})
	return r, nil
}

// PID returns the registry's actor.
func (r *Registry) PID() *actor.PID { return r.pid }

// Groups returns the directory of groups.
func (r *Registry) Groups() *group.Dir { return r.dir }

// Add enters a connection in the table and asks the actor to announce it;
// done is closed once it has been announced (the connection's pump waits
// for that before it serves the client's first request, so that the
// connection's own doings come after its arrival in every order).
func (r *Registry) Add(c *conn.Endpoint, done chan struct{}) {
	r.byID.Store(c.ID(), c)
	r.count.Add(1)
	r.sys.Root.Send(r.pid, &register{c: c, since: time.Now(), done: done})
}

// Remove takes a connection that ended out of the table and asks the actor
// to announce it: first that it left each of its groups, then the names it
// owned changing hands, then its disconnection with why.
func (r *Registry) Remove(c *conn.Endpoint, why pb.DisconnectReason, detail string) {
	if _, ok := r.byID.LoadAndDelete(c.ID()); ok {
		r.count.Add(-1)
	}
	r.sys.Root.Send(r.pid, &unregister{id: c.ID(), why: why, detail: detail})
}

// Observer hears what the registry announces, on its actor, in the one
// order of its notices (the node's federation tells the other nodes). Its
// methods must not block.
type Observer interface {
	// Connected runs before the connection's pump serves anything.
	Connected(c *conn.Endpoint)
	// Changed: c joined (or left) group, by its own request.
	Changed(c *conn.Endpoint, group string, joined bool)
	// Disconnected runs after the connection's pump stopped, so after
	// everything it routed.
	Disconnected(c *conn.Endpoint, why pb.DisconnectReason, detail string)
}

// Observe makes o hear of every change from now on (nil: none).
func (r *Registry) Observe(o Observer) {
	r.sys.Root.Send(r.pid, &observe{o})
}

// Do runs f on the registry's actor with the live connections (their
// groups filled in, in no order): between two of its announcements, so
// that f and the Observer see one sequence.
func (r *Registry) Do(f func([]Entry)) {
	r.sys.Root.Send(r.pid, &do{f})
}

// Lookup returns the live connection with id, or nil.
func (r *Registry) Lookup(id uint64) *conn.Endpoint {
	if c, ok := r.byID.Load(id); ok {
		return c.(*conn.Endpoint)
	}
	return nil
}

// Owner returns the owner of a well-known name, or nil.
func (r *Registry) Owner(name string) *conn.Endpoint {
	if t := r.names.Load(); t != nil {
		return (*t)[name]
	}
	return nil
}

// Len returns how many connections are live.
func (r *Registry) Len() int { return int(r.count.Load()) }

// NameCount returns how many names are owned.
func (r *Registry) NameCount() int {
	if t := r.names.Load(); t != nil {
		return len(*t)
	}
	return 0
}

// All returns the live connections, in no order.
func (r *Registry) All() []*conn.Endpoint {
	var out []*conn.Endpoint
	r.byID.Range(func(_, v any) bool {
		out = append(out, v.(*conn.Endpoint))
		return true
	})
	return out
}

// Own asks for a well-known name for c (queued as a standby if it is
// taken); the registry answers c's call id with an OwnReply.
func (r *Registry) Own(c *conn.Endpoint, name string, id uint64) {
	r.sys.Root.Send(r.pid, &own{c: c, name: name, id: id})
}

// Release gives up c's name, or its place in the name's queue, and answers
// c's call id.
func (r *Registry) Release(c *conn.Endpoint, name string, id uint64) {
	r.sys.Root.Send(r.pid, &release{c: c, name: name, id: id})
}

// Entry describes a live connection in a listing.
type Entry struct {
	Conn   *conn.Endpoint
	Since  time.Time
	Groups []string // its groups, sorted
	Names  []string // the names it owns, sorted
}

// ErrTimeout is returned by listings the actor did not answer in time.
var ErrTimeout = errors.New("registry: no answer")

// List returns every connection, in id order, as the actor knows them.
func (r *Registry) List(timeout time.Duration) ([]Entry, error) {
	reply := make(chan []Entry, 1)
	r.sys.Root.Send(r.pid, &list{reply: reply})
	select {
	case l := <-reply:
		return l, nil
	case <-time.After(timeout):
		return nil, ErrTimeout
	}
}

// ListNames returns the owned names, by name, with their standbys.
func (r *Registry) ListNames(timeout time.Duration) ([]*pb.NameInfo, error) {
	reply := make(chan []*pb.NameInfo, 1)
	r.sys.Root.Send(r.pid, &listNames{reply: reply})
	select {
	case l := <-reply:
		return l, nil
	case <-time.After(timeout):
		return nil, ErrTimeout
	}
}

// Messages the actor accepts, besides *group.Change (a membership change
// to announce, then to answer with its Done).
type (
	register struct {
		c     *conn.Endpoint
		since time.Time
		done  chan struct{}
	}
	unregister struct {
		id     uint64
		why    pb.DisconnectReason
		detail string
	}
	own struct {
		c    *conn.Endpoint
		name string
		id   uint64
	}
	release struct {
		c    *conn.Endpoint
		name string
		id   uint64
	}
	observe   struct{ o Observer }
	do        struct{ f func([]Entry) }
	list      struct{ reply chan<- []Entry }        // buffered, one: the actor never blocks on it
	listNames struct{ reply chan<- []*pb.NameInfo } // likewise
)

type entry struct {
	c      *conn.Endpoint
	since  time.Time
	groups map[string]bool
	names  map[string]bool // owned or queued for
}

// table is the actor's state: the connections, the groups each belongs
// to, and the well-known names with their standby queues. It is the one
// source of notices on sys.*, so an observer sees them in one order.
type table struct {
	r     *Registry
	byID  map[uint64]*entry
	names map[string][]*conn.Endpoint // owner first, then standbys (with an Arbiter: this node's claimants, in order)
	obs   Observer
	// With an Arbiter (arbiter.go): its decisions by name, and this
	// node's address prefix.
	arb    Arbiter
	words  map[string]*word
	prefix string
}

// Receive handles one message.
func (t *table) Receive(ac actor.Context) {
	switch m := ac.Message().(type) {
	case *register:
		t.byID[m.c.ID()] = &entry{c: m.c, since: m.since, groups: map[string]bool{}, names: map[string]bool{}}
		t.publish(pb.GroupConnections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_CONNECTED, Member: m.c.Member()})
		if t.obs != nil {
			t.obs.Connected(m.c)
		}
		if m.done != nil {
			close(m.done)
		}
	case *unregister:
		t.remove(m.id, m.why, m.detail)
	case *group.Change:
		t.changed(m)
	case *own:
		if t.arb != nil {
			t.ownArb(m.c, m.name, m.id)
			return
		}
		m.c.Complete(m.id, t.own(m.c, m.name))
	case *release:
		if t.arb != nil {
			t.releaseArb(m.c, m.name)
		} else {
			t.release(m.c, m.name)
		}
		m.c.Complete(m.id, conn.Result{})
	case *arbitrate:
		t.arb, t.prefix = m.a, m.prefix
	case *Decision:
		t.decide(m)
	case *observe:
		t.obs = m.o
	case *do:
		out := make([]Entry, 0, len(t.byID))
		for _, e := range t.byID {
			out = append(out, Entry{Conn: e.c, Since: e.since, Groups: sortedKeys(e.groups, nil)})
		}
		m.f(out)
	case *list:
		out := make([]Entry, 0, len(t.byID))
		for _, e := range t.byID {
			out = append(out, Entry{Conn: e.c, Since: e.since, Groups: sortedKeys(e.groups, nil),
				Names: sortedKeys(e.names, func(n string) bool {
					if t.arb != nil {
						return t.ownedArb(e.c, n)
					}
					return t.names[n][0] == e.c
				})})
		}
		slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Conn.ID(), b.Conn.ID()) })
		m.reply <- out
	case *listNames:
		if t.arb != nil {
			out := t.listArb()
			slices.SortFunc(out, func(a, b *pb.NameInfo) int { return cmp.Compare(a.Name, b.Name) })
			m.reply <- out
			return
		}
		out := make([]*pb.NameInfo, 0, len(t.names))
		for name, q := range t.names {
			ni := &pb.NameInfo{Name: name, Owner: q[0].Address()}
			for _, s := range q[1:] {
				ni.Standby = append(ni.Standby, s.Address())
			}
			out = append(out, ni)
		}
		slices.SortFunc(out, func(a, b *pb.NameInfo) int { return cmp.Compare(a.Name, b.Name) })
		m.reply <- out
	}
}

// publish sends a notice to the members of a reserved group.
func (t *table) publish(g string, n *pb.Notice) {
	ms := t.r.dir.Members(g)
	if len(ms) == 0 {
		return
	}
	b, _ := gproto.Marshal(n)
	body := pb.AppendMsg(nil, "", g, nil, b)
	for _, m := range ms {
		m.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: body}})
	}
}

// tell sends a notice to one connection.
func (t *table) tell(c *conn.Endpoint, n *pb.Notice) {
	b, _ := gproto.Marshal(n)
	c.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: pb.AppendMsg(nil, "", c.Address(), nil, b)}})
}

// changed announces a membership change of a connection still registered,
// then answers the member that asked for it.
func (t *table) changed(ch *group.Change) {
	if ch.Done != nil {
		defer ch.Done()
	}
	e := t.byID[ch.Conn.ID()]
	if e == nil || e.groups[ch.Group] == ch.Joined {
		return // gone already (its disconnection announced it), or no change
	}
	if ch.Lost {
		// Its connection ended: the group saw the actor terminate, and
		// the node's Remove follows, which announces all of its groups in
		// order, with the connection's reason. (The group may see the end
		// before the node does: announcing it here would break the order.)
		return
	}
	n := &pb.Notice{Member: ch.Conn.Member(), Group: ch.Group}
	if ch.Joined {
		e.groups[ch.Group] = true
		n.Kind = pb.NoticeKind_NOTICE_SUBSCRIBED
	} else {
		delete(e.groups, ch.Group)
		n.Kind = pb.NoticeKind_NOTICE_UNSUBSCRIBED
	}
	t.publish(pb.GroupGroups, n)
	if t.obs != nil {
		t.obs.Changed(ch.Conn, ch.Group, ch.Joined)
	}
}

// own gives name to c, or queues c for it.
func (t *table) own(c *conn.Endpoint, name string) conn.Result {
	e := t.byID[c.ID()]
	if e == nil {
		return conn.Result{Code: pb.Code_CODE_PEER_GONE, Payload: []byte("connection ending")}
	}
	q := t.names[name]
	pos := slices.Index(q, c)
	if pos < 0 {
		q = append(q, c)
		t.names[name] = q
		e.names[name] = true
		pos = len(q) - 1
		if pos == 0 {
			t.handover(name, nil, c, "")
		}
	}
	b, _ := gproto.Marshal(&pb.OwnReply{Primary: pos == 0, Position: uint32(pos)})
	return conn.Result{Payload: b}
}

// release takes c out of name's queue; if it owned the name, the next in
// line gets it.
func (t *table) release(c *conn.Endpoint, name string) {
	q, pos := t.unqueue(c, name)
	if pos < 0 {
		return
	}
	if pos == 0 {
		var next *conn.Endpoint
		if len(q) > 0 {
			next = q[0]
		}
		t.handover(name, c, next, "")
	}
}

// unqueue takes c out of name's queue and its entry's names; it returns
// the queue left and where c stood (-1: not in it, nothing changed).
func (t *table) unqueue(c *conn.Endpoint, name string) ([]*conn.Endpoint, int) {
	q := t.names[name]
	pos := slices.Index(q, c)
	if pos < 0 {
		return q, -1
	}
	if e := t.byID[c.ID()]; e != nil {
		delete(e.names, name)
	}
	q = slices.Delete(q, pos, pos+1)
	if len(q) == 0 {
		delete(t.names, name)
	} else {
		t.names[name] = q
	}
	return q, pos
}

// handover announces a name's new owner (nil: none) and updates the
// lock-free name table.
func (t *table) handover(name string, old, next *conn.Endpoint, detail string) {
	owners := make(map[string]*conn.Endpoint, len(t.names))
	for n, q := range t.names {
		owners[n] = q[0]
	}
	t.r.names.Store(&owners)
	n := &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_OWNER_CHANGED, Name: name, Detail: detail}
	if old != nil {
		n.OldOwner = old.Address()
	}
	if next != nil {
		n.NewOwner = next.Address()
		n.Member = next.Member()
	}
	t.publish(pb.GroupNames, n)
	if old != nil && old.Context().Err() == nil {
		t.tell(old, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_LOST, Name: name, OldOwner: n.OldOwner, NewOwner: n.NewOwner})
	}
	if next != nil {
		t.tell(next, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_ACQUIRED, Name: name, OldOwner: n.OldOwner, NewOwner: n.NewOwner})
	}
}

// remove forgets a connection, announcing its groups, names and end.
func (t *table) remove(id uint64, why pb.DisconnectReason, detail string) {
	e, ok := t.byID[id]
	if !ok {
		return
	}
	for _, g := range sortedKeys(e.groups, nil) {
		t.publish(pb.GroupGroups, &pb.Notice{Kind: pb.NoticeKind_NOTICE_UNSUBSCRIBED, Member: e.c.Member(), Group: g,
			Reason: why, Detail: "disconnected"})
	}
	for _, name := range sortedKeys(e.names, nil) {
		if t.arb != nil {
			t.releaseArb(e.c, name)
		} else {
			t.release(e.c, name)
		}
	}
	t.publish(pb.GroupConnections, &pb.Notice{Kind: pb.NoticeKind_NOTICE_DISCONNECTED, Member: e.c.Member(), Reason: why, Detail: detail})
	delete(t.byID, id)
	if t.obs != nil {
		t.obs.Disconnected(e.c, why, detail)
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
