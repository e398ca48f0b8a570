package group

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Change is a membership change, as the group announces it.
type Change struct {
	Group  string
	Conn   *conn.Endpoint
	Joined bool
	// Lost: the member left because its connection ended (the actor saw it
	// terminate), not by unsubscribing.
	Lost bool
	// Done, if set, answers the member that asked for the change; the
	// announcer calls it once the change is announced, so that whatever
	// the member does next comes after the announcement everywhere.
	Done func()
}

// Config is what groups need from the node.
type Config struct {
	// System is the node's actor system.
	System *actor.ActorSystem
	// Spawner starts the groups' actors (as children of the node's root).
	Spawner conn.Spawner
	// Announcer receives every membership change as a *Change message, in
	// each group's order, before the member that asked for it gets its
	// reply (the registry, which announces it and then calls Done).
	Announcer *actor.PID
}

// Dir is the directory of groups.
type Dir struct {
	cfg    Config
	mu     sync.RWMutex
	groups map[string]*Handle
	next   uint64
	remote atomic.Pointer[func(group string) []*pb.Member] // SetRemote
}

// SetRemote makes f list a group's members on other nodes of the cluster:
// a member list (SubscribeWithMembers) ends with them.
func (d *Dir) SetRemote(f func(group string) []*pb.Member) { d.remote.Store(&f) }

// Handle is a group as its users see it.
type Handle struct {
	name      string
	pid       *actor.PID
	members   atomic.Pointer[[]*conn.Endpoint] // sorted by connection id
	watchers  atomic.Pointer[[]*conn.Endpoint] // the watchers, as the actor last published them (NotifyRemote)
	ops       int                              // under Dir.mu: operations sent and not yet handled
	Published atomic.Uint64                    // messages published to it
}

// NewDir returns an empty directory.
func NewDir(cfg Config) *Dir {
	return &Dir{cfg: cfg, groups: map[string]*Handle{}}
}

// Members returns the group's members at this instant, sorted by
// connection id; nil if the group has none. The slice must not be
// modified.
func (d *Dir) Members(group string) []*conn.Endpoint {
	members, _ := d.Lookup(group)
	return members
}

// Lookup returns the group's members at this instant (as Members) and its
// handle (nil if the group has none), in one look at the directory.
func (d *Dir) Lookup(group string) ([]*conn.Endpoint, *Handle) {
	d.mu.RLock()
	h := d.groups[group]
	d.mu.RUnlock()
	if h == nil {
		return nil, nil
	}
	if p := h.members.Load(); p != nil {
		return *p, h
	}
	return nil, h
}

// Handle returns the group's handle, or nil.
func (d *Dir) Handle(group string) *Handle {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.groups[group]
}

// Info is a group in a listing.
type Info struct {
	Name    string
	Members int
}

// List returns the groups with members, by name.
func (d *Dir) List() []Info {
	d.mu.RLock()
	out := make([]Info, 0, len(d.groups))
	for name, h := range d.groups {
		if p := h.members.Load(); p != nil && len(*p) > 0 {
			out = append(out, Info{name, len(*p)})
		}
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Join adds c to group, creating the group if needed; the group answers
// c's call id (with the member list if withMembers, and c then gets the
// group's later membership changes as notices).
func (d *Dir) Join(group string, c *conn.Endpoint, id uint64, withMembers bool) error {
	return d.op(group, true, &join{c: c, id: id, withMembers: withMembers})
}

// Leave removes c from group and answers its call id.
func (d *Dir) Leave(group string, c *conn.Endpoint, id uint64) {
	if err := d.op(group, false, &leave{c: c, id: id}); err != nil {
		c.Complete(id, conn.Result{})
	}
}

type (
	join struct {
		c           *conn.Endpoint
		id          uint64
		withMembers bool
	}
	leave struct {
		c  *conn.Endpoint
		id uint64
	}
)

// op sends m to the group's actor, creating it first if create.
func (d *Dir) op(group string, create bool, m any) error {
	d.mu.Lock()
	h := d.groups[group]
	if h == nil {
		if !create {
			d.mu.Unlock()
			return errNoGroup
		}
		// Spawn without the lock (it waits for the root actor; publishers
		// read the directory meanwhile), then install the group unless
		// another connection did first.
		d.next++
		name := "group-" + itoa(d.next)
		d.mu.Unlock()
		nh := &Handle{name: group}
		g := &groupActor{d: d, h: nh, members: map[uint64]*conn.Endpoint{}, byPID: map[string]*conn.Endpoint{}}
		pid, err := d.cfg.Spawner.SpawnChild(actor.PropsFromProducer(func() actor.Actor { return g }), name)
		if err != nil {
			return err
		}
		nh.pid = pid
		d.mu.Lock()
		if h = d.groups[group]; h == nil {
			h = nh
			d.groups[group] = h
		} else {
			d.cfg.System.Root.Stop(pid) // lost the race: an empty actor nobody knows
		}
	}
	h.ops++
	d.mu.Unlock()
	d.cfg.System.Root.Send(h.pid, m)
	return nil
}

var errNoGroup = errors.New("group: no such group")

// groupActor owns one group's membership.
type groupActor struct {
	d        *Dir
	h        *Handle
	members  map[uint64]*conn.Endpoint
	byPID    map[string]*conn.Endpoint
	watchers map[uint64]*conn.Endpoint // members that asked for membership notices
}

func (g *groupActor) Receive(ac actor.Context) {
	switch m := ac.Message().(type) {
	case *join:
		g.join(ac, m)
		g.done(ac, true)
	case *leave:
		reply := func() { m.c.Complete(m.id, conn.Result{}) }
		if !g.remove(ac, m.c, false, reply) {
			reply()
		}
		g.done(ac, true)
	case *actor.Terminated:
		if c := g.byPID[m.Who.Id]; c != nil {
			g.remove(ac, c, true, nil)
		}
		g.done(ac, false)
	}
}

func (g *groupActor) join(ac actor.Context, m *join) {
	c := m.c
	res := conn.Result{}
	_, already := g.members[c.ID()]
	joining := !already && c.Context().Err() == nil
	if m.withMembers && (already || joining) {
		// A watcher from before its list of the remote members is made:
		// a remote change after the list reaches it (NotifyRemote).
		if g.watchers == nil {
			g.watchers = map[uint64]*conn.Endpoint{}
		}
		g.watchers[c.ID()] = c
		g.publishWatchers()
	}
	if m.withMembers {
		list := &pb.MemberList{}
		members := g.sorted()
		if !already {
			i, _ := slices.BinarySearchFunc(members, c.ID(), func(m *conn.Endpoint, id uint64) int { return cmp.Compare(m.ID(), id) })
			members = slices.Insert(members, i, c)
		}
		for _, mc := range members {
			list.Members = append(list.Members, mc.Member())
		}
		if f := g.d.remote.Load(); f != nil {
			list.Members = append(list.Members, (*f)(g.h.name)...)
		}
		res.Payload, _ = gproto.Marshal(list)
	}
	reply := func() { c.Complete(m.id, res) }
	if !joining {
		reply() // already a member (or going): nothing to announce
	} else {
		g.members[c.ID()] = c
		g.byPID[c.PID().Id] = c
		ac.Watch(c.PID())
		g.publish()
		g.notify(c, pb.NoticeKind_NOTICE_SUBSCRIBED, false)
		g.announce(&Change{Group: g.h.name, Conn: c, Joined: true, Done: reply})
	}
}

// remove takes c out of the group; false if it was not a member (then
// done is not called).
func (g *groupActor) remove(ac actor.Context, c *conn.Endpoint, lost bool, done func()) bool {
	if _, ok := g.members[c.ID()]; !ok {
		return false
	}
	delete(g.members, c.ID())
	delete(g.byPID, c.PID().Id)
	if _, ok := g.watchers[c.ID()]; ok {
		delete(g.watchers, c.ID())
		g.publishWatchers()
	}
	if !lost {
		ac.Unwatch(c.PID())
	}
	g.publish()
	g.notify(c, pb.NoticeKind_NOTICE_UNSUBSCRIBED, lost)
	g.announce(&Change{Group: g.h.name, Conn: c, Lost: lost, Done: done})
	return true
}

// announce hands a change to the announcer; without one (a test of the
// group alone) the member's reply goes at once.
func (g *groupActor) announce(ch *Change) {
	if g.d.cfg.Announcer == nil {
		if ch.Done != nil {
			ch.Done()
		}
		return
	}
	g.d.cfg.System.Root.Send(g.d.cfg.Announcer, ch)
}

// notify tells the group's watchers (but the member concerned) of a
// change.
func (g *groupActor) notify(c *conn.Endpoint, kind pb.NoticeKind, lost bool) {
	if len(g.watchers) == 0 {
		return
	}
	n := &pb.Notice{Kind: kind, Member: c.Member(), Group: g.h.name}
	if lost { // its actor ended: the connection's reason is settled
		n.Reason = c.Why().Disconnect()
		n.Detail = "disconnected"
	}
	b, _ := gproto.Marshal(n)
	g.tellWatchers(c.ID(), pb.AppendMsg(nil, "", g.h.name, nil, b))
}

// tellWatchers sends a notice's event body to the group's watchers but
// connection skip.
func (g *groupActor) tellWatchers(skip uint64, body []byte) {
	for id, w := range g.watchers {
		if id != skip {
			w.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: body}})
		}
	}
}

// publishWatchers makes the watchers visible to NotifyRemote.
func (g *groupActor) publishWatchers() {
	ws := make([]*conn.Endpoint, 0, len(g.watchers))
	for _, w := range g.watchers {
		ws = append(ws, w)
	}
	g.h.watchers.Store(&ws)
}

// NotifyRemote tells the watchers of group (SubscribeWithMembers) of a
// change of one of its members on another node (n: subscribed or
// unsubscribed), at once, from the caller's goroutine: in the caller's
// order with whatever else it hands the watchers (the other node's
// messages, its connections' comings and goings), not after a hop through
// the group's actor. A group without local members has no watchers:
// nothing is sent.
func (d *Dir) NotifyRemote(group string, n *pb.Notice) {
	h := d.Handle(group)
	if h == nil {
		return
	}
	ws := h.watchers.Load()
	if ws == nil || len(*ws) == 0 {
		return
	}
	b, _ := gproto.Marshal(n)
	body := pb.AppendMsg(nil, "", group, nil, b)
	for _, w := range *ws {
		w.SendEvents([]*conn.Delivery{{Service: pb.BusService, Command: pb.MsgNotice, Payload: body}})
	}
}

func (g *groupActor) sorted() []*conn.Endpoint {
	out := make([]*conn.Endpoint, 0, len(g.members))
	for _, c := range g.members {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *conn.Endpoint) int { return cmp.Compare(a.ID(), b.ID()) })
	return out
}

func (g *groupActor) publish() {
	s := g.sorted()
	g.h.members.Store(&s)
}

// done ends an operation; an empty group with nothing in flight leaves the
// directory and stops.
func (g *groupActor) done(ac actor.Context, op bool) {
	g.d.mu.Lock()
	defer g.d.mu.Unlock()
	if op {
		g.h.ops--
	}
	if len(g.members) == 0 && g.h.ops == 0 && g.d.groups[g.h.name] == g.h {
		delete(g.d.groups, g.h.name)
		ac.Stop(ac.Self())
	}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
