package conn

import (
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// eventQueue holds events that did not fit the event ring, oldest first.
type eventQueue struct {
	items            []*Event
	head             int
	bytes            int
	limit, byteLimit int
	dropped          uint32 // dropped since the last delivered event
}

func (q *eventQueue) len() int     { return len(q.items) - q.head }
func (q *eventQueue) peek() *Event { return q.items[q.head] }

func (q *eventQueue) push(e *Event) {
	q.items = append(q.items, e)
	q.bytes += len(e.Payload)
}

func (q *eventQueue) pop() *Event {
	e := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	q.bytes -= len(e.Payload)
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
	return e
}

func (q *eventQueue) full() bool { return q.len() >= q.limit || q.bytes > q.byteLimit }

// queueEvent writes m to the event ring, or queues it behind earlier ones.
func (c *Conn) queueEvent(m *Event) {
	if c.stopping {
		return
	}
	if n := c.lateDrops.Swap(0); n > 0 { // dropped by SendEvent before the mailbox
		c.backlog.dropped += uint32(n)
		c.stats.EventsDropped.Add(n)
	}
	if c.backlog.len() == 0 && c.tryEvent(m) {
		return
	}
	// The ring looks full: publish what it holds, so that a client that
	// keeps up can make room while the mailbox is still being drained, and
	// move queued events in before this one.
	c.ev.Flush()
	c.drainBacklog()
	if c.backlog.len() == 0 && c.tryEvent(m) {
		return
	}
	c.backlog.push(m)
	for c.backlog.full() && c.backlog.len() > 0 {
		if c.cfg.Overflow == Disconnect {
			why := Reason{Code: pb.Code_CODE_SLOW_CONSUMER, Text: "event queue overflow"}
			c.sayGoodbye(why)
			c.stopping = true
			c.end(why)
			return
		}
		c.backlog.pop()
		c.backlog.dropped++
		c.stats.EventsDropped.Add(1)
	}
}

// tryEvent writes one event if it fits now, with the drop count.
func (c *Conn) tryEvent(m *Event) bool {
	if len(m.Payload) > c.ev.MaxBody() { // too large for one frame: chunks, waiting for room
		if !c.ev.Fits(c.ev.MaxBody()) {
			return false
		}
		h := shm.Header{Kind: pb.KindEvent, Service: m.Service, Command: m.Command, Aux: c.backlog.dropped, ID: c.eventSeq()}
		c.stats.Events.Add(1)
		c.backlog.dropped = 0
		writeChunked(c.ctx, c.ev, h, m.Payload)
		return true
	}
	h := shm.Header{Kind: pb.KindEvent, Service: m.Service, Command: m.Command, Aux: c.backlog.dropped, ID: c.eventSeq()}
	if err := c.ev.Append(h, m.Payload); err != nil {
		return false
	}
	c.stats.Events.Add(1)
	c.stats.BytesOut.Add(uint64(len(m.Payload)))
	c.backlog.dropped = 0
	return true
}

// drainBacklog moves queued events into the ring while they fit.
func (c *Conn) drainBacklog() {
	for c.backlog.len() > 0 && !c.stopping {
		if !c.tryEvent(c.backlog.peek()) {
			return
		}
		c.backlog.pop()
	}
}

// eventSeq is the number of the event about to be written among all the
// events offered to this connection: the ones written before it, the ones
// dropped, and itself. A client sees Seq grow by 1 + Dropped.
func (c *Conn) eventSeq() uint64 {
	return c.stats.Events.Load() + c.stats.EventsDropped.Load() + 1
}
