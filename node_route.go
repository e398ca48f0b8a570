package switchboard

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// checkName validates a group or a well-known name: 1 to 255 bytes,
// printable ASCII without spaces, not starting with ':' (addresses do).
func checkName(s string) error {
	if len(s) == 0 || len(s) > pb.MaxNameLen {
		return codeError(pb.Code_CODE_INVALID_ARGUMENT, fmt.Sprintf("name %q: must be 1 to %d bytes", s, pb.MaxNameLen))
	}
	if s[0] == ':' {
		return codeError(pb.Code_CODE_INVALID_ARGUMENT, fmt.Sprintf("name %q: ':' starts addresses, not names", s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return codeError(pb.Code_CODE_INVALID_ARGUMENT, fmt.Sprintf("name %q: byte %d is not printable ASCII", s, i))
		}
	}
	return nil
}

func reserved(group string) bool { return strings.HasPrefix(group, "sys.") }

// lookupAddress finds a live connection by address (":NAME.INCARNATION.ID"):
// an address of another node, or of an earlier run of this one, finds
// nobody.
func (n *Node) lookupAddress(addr string) *conn.Endpoint {
	rest, ok := strings.CutPrefix(addr, n.addrPrefix)
	if !ok {
		return nil
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return nil
	}
	return n.reg.Lookup(id)
}

// resolve finds the connection a direct message or request goes to: an
// address, or a name's owner. It checks the policy for the destination as
// given and, for a name, for the owner's address too, so that a name is no
// way around a rule on an address.
func (n *Node) resolve(from *conn.Endpoint, dest string) (*conn.Endpoint, error) {
	if err := n.allow(credOf(from.Cred()), ActionSend, dest); err != nil {
		return nil, codeError(pb.Code_CODE_REFUSED, err.Error())
	}
	var to *conn.Endpoint
	if strings.HasPrefix(dest, ":") {
		to = n.lookupAddress(dest)
	} else {
		to = n.reg.Owner(dest)
		if to != nil {
			if err := n.allow(credOf(from.Cred()), ActionSend, to.Address()); err != nil {
				return nil, codeError(pb.Code_CODE_REFUSED, err.Error())
			}
		}
	}
	if to == nil || to.Context().Err() != nil {
		return nil, codeError(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("nobody at %q", dest))
	}
	return to, nil
}

// route handles a client's bus frame, on its pump.
func (n *Node) route(c *conn.Endpoint, f conn.BusFrame) {
	dest, payload, err := pb.CutDest(f.Body)
	wantAnswer := f.Flags&pb.FlagWantAnswer != 0 || f.Kind == pb.KindPeerCall || f.Kind == pb.KindGroupCall
	fail := func(err error) {
		e, ok := err.(*Error)
		if !ok {
			e = &Error{Code: CodeInternal, Reason: err.Error()}
		}
		if e.Code == CodeUndeliverable {
			n.undeliverable.Add(1)
		}
		if wantAnswer {
			c.Fail(f.ID, pb.Code(e.Code), e.Reason)
		}
	}
	if err != nil {
		fail(codeError(pb.Code_CODE_INVALID_ARGUMENT, "bus frame without a destination"))
		return
	}
	d := c.DestName(dest)
	switch f.Kind {
	case pb.KindPeerSend, pb.KindPeerCall:
		if a := n.fedDest(d); a != "" {
			n.fedRoute(c, f, d, a, payload, wantAnswer, fail)
			return
		}
		to, err := n.resolve(c, d)
		if err != nil {
			fail(err)
			return
		}
		if f.Kind == pb.KindPeerSend {
			if need := pb.MsgPrefixLen(c.Address(), d, false) + len(payload); need > to.MaxEvent() {
				fail(codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes: more than %s takes (%d)", need, d, to.MaxEvent())))
				return
			}
		}
		n.delivered.Add(1)
		n.copyToMonitors(c, f.Kind, d, []*conn.Endpoint{to}, payload)
		if f.Kind == pb.KindPeerCall {
			c.StartRequest(f.ID, f.Aux, false, []*conn.Endpoint{to}, pb.AppendRequest(nil, c.Address(), d, c.ReplyHandle(f.ID), f.Aux, payload))
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
			fail(codeError(pb.Code_CODE_REFUSED, fmt.Sprintf("group %q is the node's", d)))
			return
		}
		if err := n.allow(credOf(c.Cred()), ActionPublish, d); err != nil {
			fail(codeError(pb.Code_CODE_REFUSED, err.Error()))
			return
		}
		members, h := n.reg.Groups().Lookup(d) // the recipients: the members at this instant
		echo := f.Kind == pb.KindPublish && f.Flags&pb.FlagEcho != 0
		count := len(members)
		if !echo && slices.Contains(members, c) {
			count--
		}
		local := count  // its members here, the sender aside
		var rg fedGroup // its members on other nodes
		if n.fed != nil {
			rg = n.fed.group(d)
			count += rg.count
		}
		if h != nil {
			h.Published.Add(1)
		}
		n.published.Add(1)
		if count == 0 {
			fail(codeError(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("group %q has no other member", d)))
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
			c.StartRequestRemote(f.ID, f.Aux, true, targets, n.fed.targets(d, rg, payload), pb.AppendRequest(nil, c.Address(), d, c.ReplyHandle(f.ID), f.Aux, payload))
			return
		}
		took, tooBig, size := 0, 0, len(payload)
		if local > 0 { // else only other nodes' members: no body to make here
			body := pb.AppendMsg(nil, c.Address(), d, nil, payload)
			size = len(body)
			ev := c.SharedDelivery(conn.Delivery{Service: pb.BusService, Command: pb.MsgGroup, Payload: body}) // one for every member
			for _, t := range members {
				if t == c && !echo {
					continue
				}
				if len(body) > t.MaxEvent() {
					t.CountDrop() // a member that cannot take it sees a gap
					tooBig++
					continue
				}
				took++
				c.Deliver(t, ev)
			}
		}
		remote, lost := n.fed.publish(c, d, rg, payload)
		took += remote
		if wantAnswer {
			if err := publishRefusal(d, took, lost, tooBig, size); err != nil {
				fail(err)
				return
			}
			c.Answer(f.ID, binary.LittleEndian.AppendUint32(nil, uint32(took)))
		}
	}
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
	n.monMu.Unlock()
	// The monitor sees the traffic: revoke the direct channels it watches,
	// after monMu (a revoke writes to clients' sockets). A channel opened
	// meanwhile checks the monitors again once it is in the table
	// (directOpen), so none escapes.
	n.directRevokeWhere(func(ch *brokered) bool { return n.monitored(ch.a, ch.b) })
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

// publishRefusal is what a want-answer publication to group g that no
// member took answers: UNDELIVERABLE when the links to the nodes with its
// members refused it (lost), or when its members left between the look
// at the group and the sending (none lost, none too small for it);
// TOO_LARGE when members here could not take its size bytes (tooBig).
// nil when some member took it.
func publishRefusal(g string, took, lost, tooBig, size int) error {
	switch {
	case took > 0:
		return nil
	case lost > 0 && tooBig > 0:
		return codeError(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("group %q: its members here cannot take %d bytes, and the links to the other nodes with members refused it (budget spent, or the node going)", g, size))
	case lost > 0:
		return codeError(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("group %q: its members are on other nodes whose links refused it (budget spent, or the node going)", g))
	case tooBig > 0:
		return codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes: more than any member takes", size))
	}
	return codeError(pb.Code_CODE_UNDELIVERABLE, fmt.Sprintf("group %q has no other member (they left as it was sent)", g))
}
