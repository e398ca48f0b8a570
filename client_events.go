package switchboard

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"
)

// Event is an asynchronous message from the node.
type Event struct {
	Service, Command uint16
	Payload          []byte
	Seq              uint64 // the event's number on this connection
	Dropped          uint64 // events the node dropped just before this one

	// Bus messages (Service is BusService): what it is, the sender's
	// address ("" for the node), and where it was sent (an address, a
	// name, a group).
	Kind      EventKind
	From, To  string
	Monitored EventKind // for EventMonitor: the kind of the message copied

	rc     *Conn        // a request's connection, for Reply
	gap    *Reconnected // EventDisconnected, EventReconnected
	handle [pb.ReplyHandleSize]byte

	buf  *poolBuf // the payload's buffer comes from the connection's pool
	view *Conn    // the payload is in place in this connection's event ring
	gen  uint64   // which in-place event, or which loan of buf, for Release
}

// Release hands the event's payload buffer back for reuse by later events
// that fit it, sparing an allocation (and, for large events, the cache
// misses of a fresh buffer). The payload must not be used afterwards.
// Calling it is optional; a second call, of the event or of a copy of it,
// does nothing.
func (e Event) Release() {
	switch {
	case e.view != nil:
		e.view.releaseView(e.gen)
	case e.buf != nil:
		e.buf.release(e.gen)
	}
}

// Notice decodes an EventNotice.
func (e Event) Notice() (Notice, error) {
	if e.Kind != EventNotice {
		return Notice{}, errors.New("switchboard: not a notice")
	}
	var n pb.Notice
	if err := gproto.Unmarshal(e.Payload, &n); err != nil {
		return Notice{}, fmt.Errorf("%w: bad notice: %w", ErrProtocol, err)
	}
	return Notice{Kind: n.GetKind(), Member: memberOf(n.GetMember()), Group: n.GetGroup(), Name: n.GetName(),
		OldOwner: n.GetOldOwner(), NewOwner: n.GetNewOwner(), Reason: n.GetReason(), Detail: n.GetDetail(),
		Node: n.GetNode(), Incarnation: n.GetIncarnation()}, nil
}

// Reply answers an EventRequest: payload, or err's text (an *Error
// keeps its code). Call it once.
func (e Event) Reply(payload []byte, err error) error {
	if e.Kind != EventRequest || e.rc == nil {
		return errors.New("switchboard: not a request")
	}
	return e.rc.replyPeer(e.handle, payload, err)
}

// pump reads replies and events.
func (c *Conn) pump() {
	for !c.closing.Load() {
		c.rmu.Lock()
		err := c.readResponses()
		c.rmu.Unlock()
		// evmu is held by an event viewed in place, or by a receiver
		// reading the ring itself: replies go on. While receivers have
		// taken the ring (RecvEvent, RecvEvents), they read the events.
		if err == nil && !c.ringTaken.Load() && c.evmu.TryLock() {
			err = c.readEvents()
			c.evmu.Unlock()
		}
		if err != nil {
			c.end(err)
			return
		}
		if c.closing.Load() {
			return
		}
		c.rmu.Lock()
		c.resp.Arm()
		c.rmu.Unlock()
		if c.ringTaken.Load() {
			// RecvEvents reads the event ring (client_batch.go): wake a
			// receiver that sleeps there, and keep the ring armed while
			// one does.
			c.wakeReader()
			conds := c.parkConds[:1]
			if c.evSleep.Load() {
				conds = c.parkConds
			}
			if err = c.parker.Park(c.readyBatchFn, conds...); err != nil {
				if !errors.Is(err, shm.ErrClosed) {
					c.end(fmt.Errorf("%w: waiting for the node: %w", ErrProtocol, err))
				}
				return
			}
			continue
		}
		room := c.eventRoom() && !c.viewHeld.Load()
		if room && c.evmu.TryLock() {
			c.ev.Arm()
			c.evmu.Unlock()
		}
		// A wake-up consumes the announcement that caused it, and a
		// caller spinning in lead may have taken the reply meanwhile: Park
		// announces again before every look.
		if room {
			err = c.parker.Park(c.readyRoomFn, c.parkConds...)
		} else {
			err = c.parker.Park(c.readyFullFn, c.parkConds[:1]...)
		}
		if err != nil {
			if !errors.Is(err, shm.ErrClosed) {
				c.end(fmt.Errorf("%w: waiting for the node: %w", ErrProtocol, err))
			}
			return
		}
	}
}

// readyRoom is the pump's condition to wake while the event queue has
// room: a reply, or an event.
func (c *Conn) readyRoom() bool {
	return c.closing.Load() || c.resp.Unreleased() || c.ev.Unreleased()
}

// readyFull is the pump's condition to wake while the event queue is full
// (or an event is viewed in place): a reply, or room for events.
func (c *Conn) readyFull() bool {
	return c.closing.Load() || c.resp.Unreleased() || c.eventRoom() && !c.viewHeld.Load() ||
		c.ringTaken.Load() && c.evSleep.Load() && c.ev.Unreleased()
}

// readEvents moves events from the event ring to the event queue while it
// has room. The caller holds evmu.
func (c *Conn) readEvents() error {
	defer c.ev.Release()
	// A frame adds at most one event (or request) to the queue, and only
	// takers change it meanwhile: the room, looked at once, bounds the
	// batch.
	for range min(64, c.eventSpace()) {
		f, err := c.ev.Next()
		if err == shm.ErrRingEmpty {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: event ring: %w", ErrProtocol, err)
		}
		if err := c.queueEventFrame(f); err != nil {
			return err
		}
	}
	return nil
}

// queueEventFrame queues (a copy of) one event frame, reassembling chunks.
// The caller holds evmu.
func (c *Conn) queueEventFrame(f shm.Frame) error {
	if f.Kind != pb.KindEvent {
		return fmt.Errorf("%w: frame kind %d on the event ring", ErrProtocol, f.Kind)
	}
	if !c.evChunks.Whole(f) {
		m, whole, err := c.evChunks.Add(f)
		if err != nil {
			return fmt.Errorf("%w: event: %w", ErrProtocol, err)
		}
		if whole {
			payload := m.Body
			if !m.Owned { // a whole frame while another event comes in chunks
				payload = append([]byte(nil), payload...)
			}
			c.pushEvent(&Event{Service: m.Service, Command: m.Command, Payload: payload, Seq: m.ID, Dropped: uint64(m.Aux)})
		}
		return nil
	}
	e := Event{Service: f.Service, Command: f.Command, Seq: f.ID, Dropped: uint64(f.Aux)}
	e.Payload, e.buf, e.gen = c.evbufs.get(f.Body)
	c.pushEvent(&e)
	return nil
}

func (c *Conn) eventRoom() bool { return c.eventSpace() > 0 }

// eventSpace is how many more events the queue takes.
func (c *Conn) eventSpace() int {
	c.emu.Lock()
	defer c.emu.Unlock()
	return c.o.eventQueue - (len(c.equeue) - c.ehead + len(c.reqq))
}

func (c *Conn) pushEvent(e *Event) {
	if e.Dropped != 0 { // an atomic add saved per event, most have none
		c.dropped.Add(e.Dropped)
	}
	if e.Service == pb.BusService && c.busIntercept(e) {
		return
	}
	c.pushEventCounted(e)
}

// pushEventCounted queues e; its drops are already counted.
func (c *Conn) pushEventCounted(e *Event) {
	c.received.Add(1)
	c.emu.Lock()
	if len(c.equeue) == c.ehead && c.polled.Load() && c.pollFd >= 0 {
		var one [8]byte
		one[0] = 1
		unix.Write(c.pollFd, one[:]) // readable while events wait
	}
	c.equeue = append(c.equeue, *e)
	c.enq++
	c.emu.Unlock()
	select {
	case c.ewake <- struct{}{}:
	default:
	}
}

// pushEventDropOldest queues an event received over the socket transport.
// The reader of the socket cannot wait for room, so past sockEvents the
// oldest queued event is dropped, and counted in the Dropped of the event
// after it, as the node counts its own drops.
func (c *Conn) pushEventDropOldest(e *Event) {
	c.dropped.Add(e.Dropped) // the node's drops; carried counts below were counted already
	if e.Service == pb.BusService && c.busIntercept(e) {
		return
	}
	c.emu.Lock()
	for len(c.equeue)-c.ehead >= c.sockEvents {
		old := c.equeue[c.ehead]
		c.equeue[c.ehead] = Event{}
		c.ehead++
		c.deq++
		carry := 1 + old.Dropped
		if c.ehead < len(c.equeue) {
			c.equeue[c.ehead].Dropped += carry
		} else {
			e.Dropped += carry
			c.equeue, c.ehead = c.equeue[:0], 0
		}
		c.received.Add(^uint64(0)) // it was counted when queued
		c.dropped.Add(1)
		if old.Kind == EventRequest {
			// Its caller waits: tell it now rather than at its deadline.
			// (The socket reader, which runs this, must not block on the
			// request ring; a goroutine of the connection answers.)
			h := old.handle
			c.wg.Go(func() { c.replyPeer(h, nil, errRequestDropped) })
		}
	}
	c.emu.Unlock()
	c.pushEventCounted(e)
}

var errRequestDropped = errors.New("request dropped: the peer's event buffer was full")

// TryRecvEvent returns the next event if one is waiting, without waiting
// (poll mode, with Fd). Once the connection ended, the events that came
// before the end are still returned, and then false for good, with Err
// set: a poll loop checks Err when it gets false, as a bufio.Scanner's
// caller checks Err when Scan returns false.
//
// A poll loop must check Err: once the connection ended, Fd polls
// readable for good, so a loop that only drains TryRecvEvent and polls
// again spins at 100% CPU. (Before the connection learnt its end, Fd
// never became readable then, and such a loop waited forever instead.)
// On Err set, take Fd out of the poll set and stop, or redial.
//
// Without a handler or actor it reads the event ring itself too, as
// RecvEvent does (client_batch.go): an event the node wrote is found
// whether the pump or a receiver had the ring, so a loop that mixes them
// sees every event that came.
func (c *Conn) TryRecvEvent() (Event, bool) {
	if c.o.onEvent == nil && c.o.actorPID == nil {
		var one [1]Event
		n, err := c.readBatch(one[:], true)
		if err != nil {
			c.end(err)
		}
		return one[0], n == 1
	}
	e, ok, _ := c.tryRecv()
	return e, ok
}

// tryRecv is TryRecvEvent, also telling whether more events wait.
func (c *Conn) tryRecv() (Event, bool, bool) {
	var one [1]Event
	n, more := c.takeEvents(one[:])
	return one[0], n == 1, more
}

// takeEvents takes up to len(dst) queued events into dst, under one lock,
// and tells whether more wait.
func (c *Conn) takeEvents(dst []Event) (int, bool) {
	c.emu.Lock()
	if len(c.equeue) == c.ehead {
		c.emu.Unlock()
		return 0, false
	}
	wasFull := len(c.equeue)-c.ehead+len(c.reqq) >= c.o.eventQueue // eventRoom's measure: see serveRequests
	n := copy(dst, c.equeue[c.ehead:])
	clear(c.equeue[c.ehead : c.ehead+n])
	c.ehead += n
	c.deq += uint64(n)
	if c.ehead == len(c.equeue) {
		c.equeue, c.ehead = c.equeue[:0], 0
		if c.polled.Load() && c.pollFd >= 0 && !c.ended() { // not closing: a reconnection's gap is no end
			var b [8]byte
			unix.Read(c.pollFd, b[:]) // no more events: not readable (unless ended)
		}
	} else if c.ehead > 1024 && 2*c.ehead > len(c.equeue) {
		c.equeue = append(c.equeue[:0], c.equeue[c.ehead:]...)
		c.ehead = 0
	}
	more := len(c.equeue) > c.ehead
	c.emu.Unlock()
	if wasFull {
		c.bell.Load().Ring() // the pump may have stopped reading events for lack of room
	}
	return n, more
}

// RecvEvent waits for the next event, and returns a copy of it (see
// Receiving events in the package doc for the other ways): it reads the
// event ring itself, and copies the payload into a buffer that an earlier
// event's Release gave back, if one fits. Once the connection ended, it
// returns the events that came before the end, then Err's error, at once.
// For many events, RecvEvents takes them a batch at a time.
func (c *Conn) RecvEvent(ctx context.Context) (Event, error) {
	if c.o.onEvent == nil && c.o.actorPID == nil {
		// It reads the ring itself, as RecvEvents does (client_batch.go):
		// no hand-off from the pump, and a buffer given back by Release
		// for the copy.
		var one [1]Event
		if _, err := c.recvEvents(ctx, one[:], true); err != nil {
			return Event{}, err
		}
		return one[0], nil
	}
	for { // with a handler or an actor, which the pump feeds
		if e, ok, more := c.tryRecv(); ok {
			if more {
				c.passWake()
			}
			return e, nil
		}
		select {
		case <-c.ewake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-c.gone:
			if e, ok := c.TryRecvEvent(); ok {
				return e, nil
			}
			return Event{}, c.err()
		}
	}
}

// passWake hands the wake-up on to another receiver while events remain:
// one token serves any number of waiting receivers.
func (c *Conn) passWake() {
	select {
	case c.ewake <- struct{}{}:
	default:
	}
}

// RecvEventView is RecvEvent without the copy, when it can: an event still
// in the event ring is returned in place, its Payload a view of shared
// memory, valid (and holding up the connection's other events) until the
// event's Release, which must then be called, before Close too. Events
// already queued in this process come first, as copies. Treat the bytes as
// untrusted.
//
// Without an event handler or actor it takes the event ring as RecvEvent
// does (client_batch.go): the pump leaves the ring alone meanwhile, so the
// events wait there to be viewed rather than being copied into the queue,
// and a Release rings nobody.
func (c *Conn) RecvEventView(ctx context.Context) (Event, error) {
	taken := c.o.onEvent == nil && c.o.actorPID == nil
	if taken {
		c.readers.Add(1)
		c.ringTaken.Store(true)
		defer c.leaveRing()
	}
	start := time.Now()
	for i := 1; ; i++ {
		if e, ok, more := c.tryRecv(); ok {
			if more {
				c.passWake()
			}
			return e, nil
		}
		if c.evmu.TryLock() {
			e, ok, err := c.viewEvent()
			if ok {
				return e, nil // evmu stays held until e.Release
			}
			c.evmu.Unlock()
			if err != nil {
				c.end(err)
				return Event{}, err
			}
		}
		if !shm.SpinsOff() && (i%64 != 0 || time.Since(start) < c.spin) {
			continue // spin a while: the event may come before the pump wakes
		}
		if taken && c.armEvents() {
			continue
		}
		select {
		case <-c.ewake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-c.gone:
			if e, ok := c.TryRecvEvent(); ok {
				return e, nil
			}
			return Event{}, c.err()
		}
	}
}

// viewEvent returns the next event in place if the queue is empty and the
// ring holds a whole one. The caller holds evmu, and keeps holding it when
// ok is true.
func (c *Conn) viewEvent() (Event, bool, error) {
	if c.closing.Load() {
		return Event{}, false, nil
	}
	c.emu.Lock()
	queued := len(c.equeue) > c.ehead
	c.emu.Unlock()
	if queued { // the pump got there first; keep the order
		return Event{}, false, nil
	}
	for {
		f, err := c.ev.Next()
		if err == shm.ErrRingEmpty {
			c.ev.Release()
			return Event{}, false, nil
		}
		if err != nil {
			c.ev.Release()
			return Event{}, false, fmt.Errorf("%w: event ring: %w", ErrProtocol, err)
		}
		// A bus request for the request handler is not an event to view;
		// every other single-frame event is viewed in place.
		takenRequest := f.Service == pb.BusService && f.Command == pb.MsgRequest && (c.o.onRequest != nil || c.o.requestPID != nil)
		if f.Kind == pb.KindEvent && !c.evChunks.Pending(f.ID) && f.Flags&pb.FlagMore == 0 && !takenRequest {
			e := Event{Service: f.Service, Command: f.Command, Payload: f.Body, Seq: f.ID, Dropped: uint64(f.Aux)}
			if f.Service == pb.BusService && c.busIntercept(&e) {
				c.dropped.Add(uint64(f.Aux)) // malformed: dropped, and counted by busIntercept
				continue
			}
			c.received.Add(1)
			if f.Aux != 0 {
				c.dropped.Add(uint64(f.Aux))
			}
			e.view, e.gen = c, c.viewGen.Add(1)
			c.viewHeld.Store(true)
			return e, true, nil
		}
		if err := c.queueEventFrame(f); err != nil { // a chunk or a bus message: into the queue
			c.ev.Release()
			return Event{}, false, err
		}
		c.emu.Lock()
		queued := len(c.equeue) > c.ehead
		c.emu.Unlock()
		if queued { // it comes first
			c.ev.Release()
			return Event{}, false, nil
		}
	}
}

// releaseView ends the in-place event gen, once. The pump is rung only
// if it may be waiting for the ring: it reads events itself (no receiver
// has taken the ring), or it must wake a receiver that went to sleep
// while the view held the ring (armEvents).
func (c *Conn) releaseView(gen uint64) {
	if c.viewGen.CompareAndSwap(gen, gen+1) {
		c.ev.Release()
		c.viewHeld.Store(false)
		c.evmu.Unlock()
		if !c.ringTaken.Load() || c.evSleep.Load() {
			c.bell.Load().Ring() // the pump left the events alone meanwhile
		}
	}
}

// Fd returns a descriptor that polls readable while events wait to be
// taken with TryRecvEvent (poll mode), for a caller's own event loop, and
// for good once the connection ended (TryRecvEvent then returns false and
// Err says why). The descriptor is kept up to date from the first call of
// Fd on; Close closes it (take it out of your poll set before).
//
// Because it stays readable once the connection ended, a poll loop must
// check Err whenever TryRecvEvent returns false, and stop polling Fd
// when Err is set: otherwise it spins (see TryRecvEvent, and
// examples/pollmode).
func (c *Conn) Fd() int {
	c.emu.Lock()
	defer c.emu.Unlock()
	if !c.polled.Swap(true) && (len(c.equeue) > c.ehead || c.ended()) && c.pollFd >= 0 {
		var one [8]byte
		one[0] = 1
		unix.Write(c.pollFd, one[:])
	}
	return c.pollFd
}

// deliver hands events to the handler or actor, in order: it takes those
// queued a few at a time (one lock for the lot), then dispatches them.
func (c *Conn) deliver() {
	var batch [16]Event
	for {
		n, _ := c.takeEvents(batch[:])
		if n == 0 {
			select {
			case <-c.ewake:
				continue
			case <-c.gone:
				for e, ok := c.TryRecvEvent(); ok; e, ok = c.TryRecvEvent() {
					c.dispatch(e)
				}
				c.disconnected()
				return
			}
		}
		for i := range n {
			c.dispatch(batch[i])
			batch[i] = Event{} // the handler's now: not kept alive here
		}
	}
}

func (c *Conn) dispatch(e Event) {
	if c.drainMarked(&e, true) { // Drain's marker: the events before it are handed over
		return
	}
	if c.o.onEvent != nil {
		c.o.onEvent(e)
		return
	}
	c.sendActor(e)
}

// sendActor hands e to the event actor. Apart from dispatch, so that only
// the actor's events are copied to the heap (the message is a pointer),
// not every event a handler takes by value.
//
//go:noinline
func (c *Conn) sendActor(e Event) {
	c.o.actorSys.Root.Send(c.o.actorPID, &e)
}
