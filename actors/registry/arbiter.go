package registry

import (
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Names in a cluster. With an Arbiter (Arbitrate), the registry no longer
// decides who owns a name: it keeps its own claimants of each name, in
// the order they claimed (table.names), tells the Arbiter whenever they
// change, and applies the arbiter's decisions (Decide): the name's queue
// across the cluster, owner first. The notices (sys.names, NAME_ACQUIRED,
// NAME_LOST) and the owner tables follow the decisions; an Own is answered
// once a decision places its claimant.

// Arbiter hears of this node's claims on names (the node's federation,
// which asks the name's arbiter node).
type Arbiter interface {
	// Claims: name's claimants on this node changed: claimants in the
	// order they claimed (none: the node no longer claims it), owner the
	// one the last decision made owner (nil: none here). On the
	// registry's actor; it must not block.
	Claims(name string, claimants []*conn.Endpoint, owner *conn.Endpoint)
}

// Decision is an arbiter's word on a name: its queue across the cluster,
// owner first (empty: nobody claims it), and the owner's member for the
// notices.
type Decision struct {
	Name  string
	Queue []string
	Owner *pb.Member
}

type (
	arbitrate struct {
		a      Arbiter
		prefix string
	}
	word struct {
		queue   []string
		waiting []ownWait // Own calls answered once a decision places them
	}
	ownWait struct {
		c  *conn.Endpoint
		id uint64
	}
)

// Arbitrate hands the decisions on names to a (prefix: this node's
// addresses' start, ":NAME.INCARNATION."). Before any Own.
func (r *Registry) Arbitrate(a Arbiter, prefix string) {
	r.sys.Root.Send(r.pid, &arbitrate{a: a, prefix: prefix})
}

// Decide applies an arbiter's decision. Any goroutine may call it.
func (r *Registry) Decide(d *Decision) { r.sys.Root.Send(r.pid, d) }

// RemoteOwner returns the address of a name's owner when it is on another
// node ("" if none, or if the owner is here: see Owner).
func (r *Registry) RemoteOwner(name string) string {
	if t := r.remote.Load(); t != nil {
		return (*t)[name]
	}
	return ""
}

// ownArb claims name for c and answers its call once placed.
func (t *table) ownArb(c *conn.Endpoint, name string, id uint64) {
	e := t.byID[c.ID()]
	if e == nil {
		c.Complete(id, conn.Result{Code: pb.Code_CODE_PEER_GONE, Payload: []byte("connection ending")})
		return
	}
	w := t.word(name)
	w.waiting = append(w.waiting, ownWait{c, id})
	if !slices.Contains(t.names[name], c) {
		// A new claim is placed by a decision made after it: the
		// queue held now is older, and may still hold c if it
		// released the name and claims it again before the decision
		// on its release came.
		t.names[name] = append(t.names[name], c)
		e.names[name] = true
		t.arb.Claims(name, t.names[name], t.localOwner(name))
		return
	}
	t.answerWaiting(w)
}

// releaseArb withdraws c's claim on name.
func (t *table) releaseArb(c *conn.Endpoint, name string) {
	q, pos := t.unqueue(c, name)
	if pos < 0 {
		return
	}
	if w := t.words[name]; w != nil {
		w.waiting = slices.DeleteFunc(w.waiting, func(o ownWait) bool {
			if o.c == c {
				o.c.Complete(o.id, conn.Result{Code: pb.Code_CODE_CANCELED, Payload: []byte("released")})
				return true
			}
			return false
		})
	}
	t.storeOwners() // a local owner that let go is nobody's until the arbiter says
	t.arb.Claims(name, q, t.localOwner(name))
}

func (t *table) word(name string) *word {
	w := t.words[name]
	if w == nil {
		w = &word{}
		t.words[name] = w
	}
	return w
}

// decide applies d: the owner tables, the notices of a new owner, the
// Own calls it places.
func (t *table) decide(d *Decision) {
	w := t.word(d.Name)
	old := first(w.queue)
	w.queue = slices.Clone(d.Queue)
	next := first(w.queue)
	t.storeOwners()
	if old != next {
		n := &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_OWNER_CHANGED, Name: d.Name, OldOwner: old, NewOwner: next}
		if next != "" {
			n.Member = d.Owner
		}
		t.publish(pb.GroupNames, n)
		if oc := t.local(old); oc != nil && oc.Context().Err() == nil {
			t.tell(oc, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_LOST, Name: d.Name, OldOwner: old, NewOwner: next})
		}
		if nc := t.local(next); nc != nil && slices.Contains(t.names[d.Name], nc) {
			t.tell(nc, &pb.Notice{Kind: pb.NoticeKind_NOTICE_NAME_ACQUIRED, Name: d.Name, OldOwner: old, NewOwner: next})
		}
	}
	t.answerWaiting(w)
	if len(w.queue) == 0 && len(w.waiting) == 0 && len(t.names[d.Name]) == 0 {
		delete(t.words, d.Name)
	}
}

// answerWaiting answers the Own calls whose claimant the queue places.
func (t *table) answerWaiting(w *word) {
	w.waiting = slices.DeleteFunc(w.waiting, func(o ownWait) bool {
		pos := slices.Index(w.queue, o.c.Address())
		if pos < 0 {
			return false
		}
		b, _ := gproto.Marshal(&pb.OwnReply{Primary: pos == 0, Position: uint32(pos)})
		o.c.Complete(o.id, conn.Result{Payload: b})
		return true
	})
}

// local returns the live connection of this node at addr, or nil.
func (t *table) local(addr string) *conn.Endpoint {
	rest, ok := strings.CutPrefix(addr, t.prefix)
	if !ok || addr == "" {
		return nil
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return nil
	}
	if e := t.byID[id]; e != nil {
		return e.c
	}
	return nil
}

// localOwner is name's owner if it is one of this node's claimants.
func (t *table) localOwner(name string) *conn.Endpoint {
	w := t.words[name]
	if w == nil {
		return nil
	}
	if c := t.local(first(w.queue)); c != nil && slices.Contains(t.names[name], c) {
		return c
	}
	return nil
}

// storeOwners rebuilds the lock-free owner tables from the decisions: a
// local owner that still claims the name, or a remote owner's address.
func (t *table) storeOwners() {
	owners := map[string]*conn.Endpoint{}
	remote := map[string]string{}
	for name, w := range t.words {
		o := first(w.queue)
		switch {
		case o == "":
		case strings.HasPrefix(o, t.prefix):
			if c := t.localOwner(name); c != nil {
				owners[name] = c
			}
		default:
			remote[name] = o
		}
	}
	t.r.names.Store(&owners)
	t.r.remote.Store(&remote)
}

// ownedArb reports whether c owns name by the last decision.
func (t *table) ownedArb(c *conn.Endpoint, name string) bool {
	w := t.words[name]
	return w != nil && first(w.queue) == c.Address()
}

// listArb lists the names as decided, with their standbys.
func (t *table) listArb() []*pb.NameInfo {
	out := make([]*pb.NameInfo, 0, len(t.words))
	for name, w := range t.words {
		if len(w.queue) > 0 {
			out = append(out, &pb.NameInfo{Name: name, Owner: w.queue[0], Standby: slices.Clone(w.queue[1:])})
		}
	}
	return out
}

func first(q []string) string {
	if len(q) == 0 {
		return ""
	}
	return q[0]
}
