package switchboard

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// How name clients share a Conn's one stream of events: the Conn's reader
// of events (its pump, its socket reader, or a RecvEventView caller) hands
// each group message and notice to busIntercept, which offers it to the
// Conn's name clients (tapped) before it is queued. A name client's events
// are the notices on sys.names about its name and the publications to its
// notifications group; the tap copies them into the name client's own
// queue. Whether the Conn's own delivery mode gets the event too depends
// on whether the Conn is a member of that group on its own (the group is
// shared): it is if it had joined it before its first name client did,
// or if the application called Subscribe for it since (Conn.Subscribe and
// Unsubscribe tell the taps, tapOwn). A group that is not shared was
// joined for the name clients alone: none of its events are the Conn's
// own, neither those about the followed names nor the others (notices
// about other names on sys.names), and the tap takes them all out of the
// Conn's stream. So the Conn keeps whatever delivery mode it was dialled
// with, and any number of name clients share it.

// tapLinger is how long a group the name clients left (and the Conn is
// not a member of on its own) stays known to the tap after its
// Unsubscribe returned, so that what was on its way is dropped rather
// than handed to the Conn's own events, which never asked for it.
const tapLinger = time.Second

// nameTaps is a Conn's name clients and the groups they use.
type nameTaps struct {
	mu  sync.Mutex // name clients joining and leaving, and the Conn's own Subscribe and Unsubscribe, one at a time; held across their bus calls
	set atomic.Pointer[tapSet]
	gen uint64 // under mu: numbers the groups left, for their purge
}

// tapSet is an immutable snapshot, read lock-free by the event reader.
type tapSet struct {
	clients []*NameClient
	groups  map[string]tapGroup
}

// tapGroup is one group the name clients use or just left. A group they
// left (refs 0, never shared) stays for tapLinger after the Conn left it,
// so that messages still on their way are dropped; then it goes
// (tapPurge). If leaving it failed, it stays until a name client or the
// Conn itself joins it again.
type tapGroup struct {
	refs   int    // name clients using it
	shared bool   // the Conn is a member on its own: its events also go to the Conn's own
	gen    uint64 // refs 0: which leaving this is (tapPurge)
}

func (s *tapSet) clone() *tapSet {
	n := &tapSet{groups: map[string]tapGroup{}}
	if s != nil {
		n.clients = slices.Clone(s.clients)
		for g, tg := range s.groups {
			n.groups[g] = tg
		}
	}
	return n
}

// tapped offers a group message or notice (already decoded by
// busIntercept) to the name clients; it reports true if it was theirs
// alone.
func (c *Conn) tapped(e *Event) bool {
	s := c.taps.set.Load()
	if s == nil {
		return false
	}
	g, ok := s.groups[e.To]
	if !ok {
		return false
	}
	if e.Command == pb.MsgNotice {
		if e.To != GroupNames {
			return false // a membership notice on a group (SubscribeWithMembers): the Conn's own
		}
		var n pb.Notice
		if gproto.Unmarshal(e.Payload, &n) == nil && n.GetKind() == NoticeNameOwnerChanged {
			for _, nc := range s.clients { // only the name clients following that name
				if nc.name == n.GetName() {
					nc.ownerChanged(n.GetOldOwner(), n.GetNewOwner())
				}
			}
		}
		// Any notice on sys.names, about a followed name or not, is the
		// Conn's own only if it is a member of sys.names on its own.
		return !g.shared
	}
	for _, nc := range s.clients {
		if nc.notify == e.To {
			nc.notified(e.From, append([]byte(nil), e.Payload...))
		}
	}
	return !g.shared
}

// tapJoin adds nc to the Conn's name clients and joins the groups it
// needs: sys.names, and its notifications group.
func (c *Conn) tapJoin(ctx context.Context, nc *NameClient) error {
	t := &c.taps
	t.mu.Lock()
	defer t.mu.Unlock()
	next := t.set.Load().clone()
	var join []string // the groups to subscribe to
	for _, g := range nc.groups() {
		tg, known := next.groups[g]
		switch {
		case tg.refs > 0 || tg.shared:
		case known: // left by earlier name clients: not the Conn's own
			join = append(join, g)
		default:
			ms, err := c.Members(ctx, g)
			if err != nil {
				return err
			}
			tg.shared = slices.ContainsFunc(ms, func(m Member) bool { return m.Address == c.Address() })
			if !tg.shared {
				join = append(join, g)
			}
		}
		tg.refs++
		next.groups[g] = tg
	}
	next.clients = append(next.clients, nc)
	t.set.Store(next) // before subscribing: the first events are nc's
	for _, g := range join {
		if err := c.subscribe(ctx, g); err != nil {
			c.leaveLocked(nc)
			return err
		}
	}
	return nil
}

// groups returns the groups nc needs.
func (nc *NameClient) groups() []string {
	if nc.notify == "" || nc.notify == GroupNames {
		return []string{GroupNames}
	}
	return []string{GroupNames, nc.notify}
}

// tapLeave removes nc from the Conn's name clients, and leaves the groups
// that no name client uses any more, unless the Conn is a member of them
// on its own.
func (c *Conn) tapLeave(nc *NameClient) {
	c.taps.mu.Lock()
	defer c.taps.mu.Unlock()
	c.leaveLocked(nc)
}

// leaveLocked is tapLeave, under taps.mu.
func (c *Conn) leaveLocked(nc *NameClient) {
	t := &c.taps
	next := t.set.Load().clone()
	i := slices.Index(next.clients, nc)
	if i < 0 {
		return
	}
	next.clients = slices.Delete(next.clients, i, i+1)
	ended := c.err() != nil // nothing comes any more: forget the groups at once
	var leave []string
	for _, g := range nc.groups() {
		tg := next.groups[g]
		tg.refs--
		switch {
		case tg.refs > 0:
			next.groups[g] = tg
		case tg.shared || ended:
			delete(next.groups, g)
		default: // dropping what is on its way until tapPurge
			t.gen++
			tg.gen = t.gen
			next.groups[g] = tg
			leave = append(leave, g)
		}
	}
	t.set.Store(next)
	if len(leave) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, g := range leave {
		if c.unsubscribe(ctx, g) != nil {
			continue // still a member, maybe: keep dropping its messages
		}
		gen := next.groups[g].gen
		time.AfterFunc(tapLinger, func() { c.tapPurge(g, gen) })
	}
}

// tapPurge forgets group g, left by the name clients (leaving gen), unless
// a name client or the Conn itself joined it since.
func (c *Conn) tapPurge(g string, gen uint64) {
	t := &c.taps
	t.mu.Lock()
	defer t.mu.Unlock()
	tg, ok := t.set.Load().groups[g]
	if !ok || tg.refs > 0 || tg.shared || tg.gen != gen {
		return
	}
	next := t.set.Load().clone()
	delete(next.groups, g)
	t.set.Store(next)
}

// tapOwn runs the Conn's own Subscribe (join) or Unsubscribe of group
// (call), and keeps the taps up to date: a group the name clients use
// becomes shared when the Conn joins it, so that its events reach the
// Conn's own delivery mode too, and stops being shared when the Conn
// leaves it, without leaving it on the node (the name clients still
// need it). A group the name clients just left is forgotten when the Conn
// joins it. It holds taps.mu across call, so that it is ordered with the
// name clients' joining and leaving.
func (c *Conn) tapOwn(group string, join bool, call func() error) error {
	t := &c.taps
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.set.Load()
	var tg tapGroup
	known := false
	if s != nil {
		tg, known = s.groups[group]
	}
	if !known {
		return call()
	}
	if !join && tg.refs > 0 { // the name clients' now, alone
		if tg.shared {
			next := s.clone()
			tg.shared = false
			next.groups[group] = tg
			t.set.Store(next)
		}
		return nil
	}
	if err := call(); err != nil {
		return err
	}
	if !join { // left by the name clients, and now by the Conn: nothing changes
		return nil
	}
	next := s.clone()
	if tg.refs > 0 {
		tg.shared = true
		next.groups[group] = tg
	} else {
		delete(next.groups, group)
	}
	t.set.Store(next)
	return nil
}
