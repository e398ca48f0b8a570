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
// queue and takes them out of the Conn's stream, unless the Conn had
// joined that group itself before its first name client did (the group is
// then shared: the Conn's own delivery mode gets the event too). So the
// Conn keeps whatever delivery mode it was dialled with, and any number of
// name clients share it.

// nameTaps is a Conn's name clients and the groups they use.
type nameTaps struct {
	mu  sync.Mutex // name clients joining and leaving, one at a time; held across their bus calls
	set atomic.Pointer[tapSet]
}

// tapSet is an immutable snapshot, read lock-free by the event reader.
type tapSet struct {
	clients []*NameClient
	groups  map[string]tapGroup
}

// tapGroup is one group the name clients joined. A group they left
// (refs 0, not shared) stays, so that messages still on their way when
// the name clients left it are dropped rather than handed to the Conn's
// own events, which never asked for them.
type tapGroup struct {
	refs   int  // name clients using it
	shared bool // the Conn was a member before its name clients: its events also go to the Conn's own
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
			return false
		}
		var n pb.Notice
		if gproto.Unmarshal(e.Payload, &n) == nil && n.GetKind() == NoticeNameOwnerChanged {
			for _, nc := range s.clients {
				if nc.name == n.GetName() {
					nc.ownerChanged(n.GetOldOwner(), n.GetNewOwner())
				}
			}
		}
	} else {
		for _, nc := range s.clients {
			if nc.notify == e.To {
				nc.notified(e.From, append([]byte(nil), e.Payload...))
			}
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
		case tg.refs > 0:
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
	prev := t.set.Load()
	next.clients = append(next.clients, nc)
	t.set.Store(next) // before subscribing: the first events are nc's
	for _, g := range join {
		if err := c.Subscribe(ctx, g); err != nil {
			t.set.Store(prev)
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
// that no name client uses any more, unless the Conn had joined them
// itself.
func (c *Conn) tapLeave(nc *NameClient) {
	t := &c.taps
	t.mu.Lock()
	defer t.mu.Unlock()
	next := t.set.Load().clone()
	i := slices.Index(next.clients, nc)
	if i < 0 {
		return
	}
	next.clients = slices.Delete(next.clients, i, i+1)
	var leave []string
	for _, g := range nc.groups() {
		tg := next.groups[g]
		tg.refs--
		switch {
		case tg.refs > 0:
			next.groups[g] = tg
		case tg.shared:
			delete(next.groups, g)
		default:
			next.groups[g] = tg
			leave = append(leave, g)
		}
	}
	t.set.Store(next)
	if len(leave) == 0 || c.err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, g := range leave {
		c.Unsubscribe(ctx, g) // best effort: what still comes is dropped (see tapGroup)
	}
}
