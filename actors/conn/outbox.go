package conn

// Outbox gathers events for several connections and hands each its share
// as one batch (SendEvents) when flushed, in the order they were added:
// one actor message per destination per batch instead of one per event.
// The zero value is empty. One goroutine at a time: a connection's pump
// (Deliver), or the node's delivery of a pass of another node's messages.
// What reaches a destination another way in the meantime overtakes what
// is gathered: its owner flushes first.
type Outbox struct {
	index map[*Endpoint]int // a destination's index in order and queue
	order []*Endpoint
	queue [][]*Delivery // the events gathered for order[i]
	hint  int           // the most one destination had last time: a new destination's first capacity
	n     int           // events gathered
}

// Add gathers ev for dst. One Delivery may go to several destinations,
// and must not change once given (see Deliver).
func (o *Outbox) Add(dst *Endpoint, ev *Delivery) {
	if dst.saturated() {
		// Its mailbox already holds all it may: the event would be dropped
		// when the batch goes out. Count it now, for the price of an
		// atomic add, so that a stalled member costs its group's
		// publishers next to nothing.
		dst.lateDrops.Add(1)
		dst.requestDropped(ev)
		return
	}
	if o.index == nil {
		o.index = map[*Endpoint]int{}
	}
	i, ok := o.index[dst]
	if !ok {
		i = len(o.order)
		o.index[dst] = i
		o.order = append(o.order, dst)
		// As many as the busiest destination had last time: a group's
		// members each get one array of the right size per batch.
		o.queue = append(o.queue, make([]*Delivery, 0, max(o.hint, 4)))
	}
	o.queue[i] = append(o.queue[i], ev)
	o.n++
}

// Len returns how many events are gathered.
func (o *Outbox) Len() int { return o.n }

// Flush hands each destination what was gathered for it.
func (o *Outbox) Flush() {
	if len(o.order) == 0 {
		return
	}
	most := 0
	for i, dst := range o.order {
		evs := o.queue[i]
		most = max(most, len(evs))
		dst.SendEvents(evs) // the destination's now
		delete(o.index, dst)
	}
	o.hint = min(most, 64) // a pump's batch is at most 64 frames (serveRequests)
	clear(o.order)
	clear(o.queue)
	o.order, o.queue, o.n = o.order[:0], o.queue[:0], 0
}
