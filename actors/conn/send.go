package conn

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// Events a handler sends itself, on the pump, during its call
// (SendEventFromServe, WriteEventFromServe). Unlike the events that come
// through the mailbox, these may wait: when the event ring is full and
// nothing is queued, the handler waits up to Config.EventWait for the
// client to make room, so that the event is written into the ring (one
// copy, or none for a loan) instead of copied into the queue and copied
// again from there. A client that does not make room in time sends the
// event the queue's way, with its bounds and overflow policy; while the
// queue holds events, nothing waits (the client is behind: the handler
// must not be held up by each of its events in turn).

// ErrTooLarge: a loaned event larger than the connection's largest message.
var ErrTooLarge = errors.New("conn: event larger than the largest message")

// SendEventFromServe queues an event for the client without the mailbox
// hop. Only Serve may call it, on the pump, during its call; events sent
// this way keep their order among themselves. It waits for room in the
// event ring as described above.
func (c *Endpoint) SendEventFromServe(service, command uint16, payload []byte) {
	if !c.serving.CompareAndSwap(handlerRunning, handlerSending) {
		c.lateDrops.Add(1) // the connection went on without the handler
		return
	}
	if !c.writeNow(service, command, payload) {
		c.sendWaiting(Delivery{Service: service, Command: command, Payload: payload})
	}
	c.serving.Store(handlerRunning)
}

// writeNow is the common case of SendEventFromServe: a payload that fits
// one frame, nothing queued before it and room in the ring now. It copies
// the payload into the ring and reports whether it did; if not, nothing
// changed and the event takes writeWaiting's way.
func (c *Endpoint) writeNow(service, command uint16, payload []byte) bool {
	n := len(payload)
	if n > c.ev.MaxBody() || !c.direct() {
		return false
	}
	p, err := c.ev.Reserve(n)
	if err != nil {
		return false
	}
	copy(p, payload)
	return c.commitEvent(service, command, n) == nil
}

// SendEventFromServeParts is SendEventFromServe with the payload gathered
// from parts, written at once or copied (joined) if it has to wait.
func (c *Endpoint) SendEventFromServeParts(service, command uint16, parts [][]byte) {
	c.sendFromServe(Delivery{Service: service, Command: command, Parts: parts})
}

// sendFromServe writes m from the handler, waiting for room, or queues a
// copy of it.
func (c *Endpoint) sendFromServe(m Delivery) {
	if !c.serving.CompareAndSwap(handlerRunning, handlerSending) {
		c.lateDrops.Add(1) // the connection went on without the handler
		return
	}
	c.sendWaiting(m)
	c.serving.Store(handlerRunning)
}

// sendWaiting writes m (on the stack unless it is queued), waiting for
// room, or queues a copy of it. The caller moved the pump to sending.
func (c *Endpoint) sendWaiting(m Delivery) {
	if !c.writeWaiting(&m) {
		q := m
		c.queueEvent(&q)
	}
}

// WriteEventFromServe sends an event whose payload fill writes in place:
// straight into the event ring when the payload fits one frame and room
// comes within EventWait (a loan of the ring's memory: the payload is
// written once, where the client reads it), else into a buffer of its own
// that takes the queue's path. fill gets n bytes and returns how many of
// them are the payload; an error from it abandons the event (nothing is
// sent, the loaned room is given back) and is returned. Only Serve may
// call it, on the pump, during its call; fill must not send events itself
// and must not keep p.
func (c *Endpoint) WriteEventFromServe(service, command uint16, n int, fill func(p []byte) (int, error)) error {
	if n < 0 || n > c.cfg.MaxMessage {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, c.cfg.MaxMessage)
	}
	if !c.serving.CompareAndSwap(handlerRunning, handlerSending) {
		c.lateDrops.Add(1) // the connection went on without the handler
		return nil
	}
	restore := true
	defer func() {
		if restore {
			c.serving.Store(handlerRunning) // fill may panic: the handler's recover reports it
		}
	}()
	if n <= c.ev.MaxBody() && c.direct() {
		for {
			p, err := c.ev.Reserve(n)
			if err == nil {
				return c.commitLoan(service, command, n, p, fill)
			}
			if err != shm.ErrRingFull || !c.awaitRoom(n) {
				break
			}
		}
	}
	// A buffer of the event's own: fill runs as the handler does
	// (running), so that a fill that blocks is reaped like a handler that
	// ignores its context; the event is queued only if the pump is still
	// the handler's afterwards.
	p := make([]byte, n)
	restore = false
	c.serving.Store(handlerRunning)
	k, err := fill(p)
	if !c.serving.CompareAndSwap(handlerRunning, handlerSending) {
		c.lateDrops.Add(1) // the connection went on without the handler; leaveHandler ends this goroutine
		return nil
	}
	restore = true
	if err != nil {
		return err
	}
	if k < 0 || k > n {
		return fmt.Errorf("conn: fill returned %d of %d bytes", k, n)
	}
	c.queueEvent(&Delivery{Service: service, Command: command, Payload: p[:k], owned: true})
	return nil
}

// commitLoan lets fill write the reserved frame p and commits what it
// wrote as the next event; on fill's error the reservation lapses (the
// next one writes over it) and nothing else changes.
func (c *Endpoint) commitLoan(service, command uint16, n int, p []byte, fill func([]byte) (int, error)) error {
	k, err := fill(p)
	if err == nil && (k < 0 || k > n) {
		err = fmt.Errorf("conn: fill returned %d of %d bytes", k, n)
	}
	if err != nil {
		return err
	}
	return c.commitEvent(service, command, k)
}

// commitEvent commits the reserved frame's first n bytes as the next
// event, with the drops before it, and counts it.
func (c *Endpoint) commitEvent(service, command uint16, n int) error {
	h := shm.Header{Kind: pb.KindEvent, Service: service, Command: command, Aux: c.backlog.dropped, ID: c.eventSeq()}
	if err := c.ev.Commit(h, n); err != nil { // only if the reservation was lost: a bug
		return err
	}
	c.backlog.dropped = 0
	c.stats.Events.Add(1)
	c.stats.BytesOut.Add(uint64(n))
	c.publishSome()
	return nil
}

// direct reports whether an event sent now may go straight to the ring,
// waiting for room: nothing is queued before it and the client reads.
// It first counts the drops made before the mailbox, which travel with
// the next event written.
func (c *Endpoint) direct() bool {
	if c.stopping || c.saidBye.Load() {
		return false
	}
	c.takeLateDrops()
	return c.backlog.len() == 0
}

// takeLateDrops moves the drops counted by SendEvent before the mailbox
// into the count the next event carries.
func (c *Endpoint) takeLateDrops() {
	if c.lateDrops.Load() == 0 { // most events: a load, not a locked swap, per event
		return
	}
	if n := c.lateDrops.Swap(0); n > 0 {
		c.backlog.dropped += uint32(n)
		c.stats.EventsDropped.Add(n)
	}
}

// writeWaiting writes m into the event ring, waiting for room as it
// fills, and reports whether all of it went in. When it reports false, m
// (perhaps partly written: m.sent) goes on to queueEvent.
func (c *Endpoint) writeWaiting(m *Delivery) bool {
	if !c.direct() {
		return false
	}
	for !c.tryEvent(m) {
		if !c.awaitRoom(c.nextChunk(m)) {
			return false
		}
	}
	return true
}

// awaitRoom waits until a frame with an n-byte body fits the event ring,
// for at most EventWait, and reports whether it does. The wait ends early
// when nobody reads the ring any more (the client said goodbye, or the
// connection ended: the client is gone, or the node closes) or the ring
// breaks.
func (c *Endpoint) awaitRoom(n int) bool {
	if c.cfg.EventWait <= 0 {
		return false
	}
	c.stats.EventWaits.Add(1)
	ctx, cancel := context.WithTimeout(c.reading, c.cfg.EventWait)
	err := c.ev.WaitSpace(ctx, n)
	cancel()
	if err != nil {
		c.stats.EventWaitsExpired.Add(1)
		return false
	}
	return true
}
