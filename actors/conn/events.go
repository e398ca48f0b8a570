package conn

import (
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// eventQueue holds events that did not fit the event ring, oldest first.
// The head may be partly written: an event larger than one frame goes out
// chunk by chunk as room appears, never blocking the pump.
type eventQueue struct {
	items            []*Delivery
	head             int
	bytes            int
	limit, byteLimit int
	dropped          uint32 // dropped since the last delivered event
}

func (q *eventQueue) len() int { return len(q.items) - q.head }

func (q *eventQueue) peek() *Delivery { return q.items[q.head] }

func (q *eventQueue) push(e *Delivery) {
	q.items = append(q.items, e)
	q.bytes += e.size()
}

func (q *eventQueue) pop() *Delivery {
	e := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	q.bytes -= e.size()
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
	return e
}

// dropOldest drops the oldest event not yet partly written, and returns
// it (nil if there was none).
func (q *eventQueue) dropOldest() *Delivery {
	if q.len() == 0 {
		return nil
	}
	if q.peek().sent == 0 {
		return q.pop()
	}
	if q.len() == 1 {
		return nil
	}
	i := q.head + 1
	e := q.items[i]
	q.bytes -= e.size()
	copy(q.items[i:], q.items[i+1:])
	q.items[len(q.items)-1] = nil
	q.items = q.items[:len(q.items)-1]
	return e
}

// full reports whether the queue holds more than its bounds allow.
func (q *eventQueue) full() bool { return q.len() > q.limit || q.bytes > q.byteLimit }

// queueEvent writes m to the event ring, or queues it behind earlier ones.
func (c *Endpoint) queueEvent(m *Delivery) {
	if c.stopping {
		return
	}
	if c.saidBye.Load() { // the client is gone: nobody reads its events
		c.requestDropped(m) // a peer's request: its caller learns at once
		return
	}
	c.takeLateDrops() // dropped by SendEvent before the mailbox
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
	// Queued, the payload must outlive the caller's: a handler may have
	// passed a view of its request, which the ring gives back soon.
	m.own()
	c.backlog.push(m)
	for c.backlog.full() {
		if c.cfg.Overflow == Disconnect {
			why := Reason{Code: pb.Code_CODE_SLOW_CONSUMER, Text: "event queue overflow"}
			c.sayGoodbye(why)
			c.stopping = true
			c.end(why)
			return
		}
		dropped := c.backlog.dropOldest()
		if dropped == nil {
			break
		}
		c.requestDropped(dropped)
		c.backlog.dropped++
		c.stats.EventsDropped.Add(1)
	}
}

// queueShared is queueEvent for an event other connections may have been
// given too (SendEvents): it is written from a copy on the stack, and
// only what cannot be written now is queued, as a copy of its own (with
// its progress, for an event that went partly in).
func (c *Endpoint) queueShared(m *Delivery) {
	d := *m
	if !c.stopping && !c.saidBye.Load() {
		c.takeLateDrops()
		if c.backlog.len() == 0 && c.tryEvent(&d) {
			return
		}
	}
	q := new(Delivery)
	*q = d
	c.queueEvent(q)
}

// nextChunk is the size of the next frame of m.
func (c *Endpoint) nextChunk(m *Delivery) int { return min(c.ev.MaxBody(), m.size()-m.sent) }

// tryEvent writes what fits now of m, with the drop count, and reports
// whether all of it was written. An event larger than a frame goes in
// chunks (FlagMore) with one sequence number; its progress is kept in m.
func (c *Endpoint) tryEvent(m *Delivery) bool {
	size := m.size()
	var buf [4][]byte
	for {
		n := c.nextChunk(m)
		if !c.ev.Fits(n) {
			return false
		}
		first := m.sent == 0 && m.seq == 0
		if first { // the first frame fixes the event's number and drop count
			m.seq, m.aux = c.eventSeq(), c.backlog.dropped
		}
		h := shm.Header{Kind: pb.KindEvent, Service: m.Service, Command: m.Command, Aux: m.aux, ID: m.seq}
		if m.sent+n < size {
			h.Flags = pb.FlagMore
		}
		if err := c.ev.Append(h, m.span(&buf, m.sent, n)...); err != nil {
			if first {
				m.seq, m.aux = 0, 0
			}
			return false
		}
		if first {
			c.backlog.dropped = 0
		}
		c.publishSome()
		m.sent += n
		if m.sent == size {
			break
		}
	}
	c.stats.Events.Add(1)
	c.stats.BytesOut.Add(uint64(size))
	return true
}

// publishSome publishes the events written since the last flush once
// they fill a sixteenth of the ring (64 KiB of a 1 MiB ring): the client
// reads a long batch of large events while the rest is written, instead of
// after the ring filled. A batch of small events is still published once,
// at the end of the pump's round (or as the ring fills).
func (c *Endpoint) publishSome() {
	if c.ev.Unflushed() >= c.ev.Capacity()>>4 {
		c.ev.Flush()
	}
}

// drainBacklog moves queued events into the ring while they fit.
func (c *Endpoint) drainBacklog() {
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
func (c *Endpoint) eventSeq() uint64 {
	return c.stats.Events.Load() + c.stats.EventsDropped.Load() + 1
}
