package switchboard

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"
)

// directCloseAt tells the node this caller ended channel ref.
func (c *Conn) directCloseAt(ref *pb.DirectRef) {
	body, _ := gproto.Marshal(ref)
	c.send(context.Background(), pb.BusService, pb.BusDirectClose, [][]byte{body})
}

// directControl handles a DirectChannel or DirectClosed control frame, on
// the socket reader; it takes ownership of fds.
func (c *Conn) directControl(msg *pb.Control, fds []int) {
	if m := msg.GetDirectChannel(); m != nil && c.dir != nil {
		link, err := shm.OpenLinkSide(fds, m.GetCaller())
		if err == nil && (link.NumRings() != 2 || m.GetCaller() != (link.Producer(0) != nil) || link.Consumer(0) == nil && link.Consumer(1) == nil) {
			link.Close()
			err = shm.ErrBadSegment
		}
		if err != nil {
			c.dir.corrupt.Add(1)
			return
		}
		ch := &dchan{id: m.GetId(), peer: m.GetPeer(), caller: m.GetCaller(), link: link,
			pending: map[uint64]time.Time{}, started: make(chan struct{}), quiet: make(chan struct{})}
		ch.ctx, ch.cancel = context.WithCancel(c.life)
		if ch.caller {
			ch.prod, ch.cons = link.Producer(0), link.Consumer(1)
			ch.reasm = pb.Reassembly{MaxInFlight: 64, MaxSize: c.maxMsg + pb.MaxMsgOverhead}
			ch.lead, ch.kick = make(chan struct{}, 1), make(chan struct{}, 1)
		} else {
			ch.prod, ch.cons = link.Producer(1), link.Consumer(0)
			ch.reasm = pb.Reassembly{MaxInFlight: 16, MaxSize: c.maxMsg + pb.MaxMsgOverhead}
		}
		c.directWaits(ch) // client_direct_wait.go, client_direct_serve.go
		ch.last.Store(time.Now().UnixNano())
		c.dir.mu.Lock()
		c.dir.byID[ch.id] = ch
		if !ch.caller {
			c.dir.in[ch.peer] = append(c.dir.in[ch.peer], ch)
		}
		close(c.dir.arrived)
		c.dir.arrived = make(chan struct{})
		if c.dir.early[ch.id] { // the marker came first: the event ring and the socket race
			delete(c.dir.early, ch.id)
			ch.once.Do(func() { close(ch.started) })
		}
		c.dir.mu.Unlock()
		sess := c.rc.sessDone
		c.wg.Go(func() { // the channel's own stop: the session's end
			select {
			case <-sess:
			case <-ch.ctx.Done():
			}
			ch.cancel()
			ch.link.Shutdown()
		})
		if ch.caller {
			c.wg.Go(func() { c.directKeep(ch) })
		} else {
			c.wg.Go(func() { c.directRead(ch) })
		}
		return
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	m := msg.GetDirectClosed()
	if m == nil || c.dir == nil {
		return
	}
	c.dir.mu.Lock()
	ch := c.dir.byID[m.GetId()]
	c.dir.mu.Unlock()
	if ch == nil {
		return
	}
	switch {
	case ch.caller && m.GetCode() == pb.Code_CODE_REFUSED: // revoked: end it, keep its replies coming
		c.wg.Go(func() { c.directRetire(ch) })
	case ch.caller: // the responder is gone: what is in flight fails now
		c.directFail(ch, m.GetCode())
	default: // the caller ended it, or is gone: what it wrote before is served first
		c.evmu.Lock()
		c.directDrain(ch, true, false)
		c.evmu.Unlock()
		c.directServedCancel(ch, m.GetCode())
		ch.cancel()
	}
}

// directFail fails every request in flight on a caller's channel with
// code's error (ErrPeerGone), and ends the channel.
func (c *Conn) directFail(ch *dchan, code pb.Code) {
	if code == pb.Code_CODE_OK {
		code = pb.Code_CODE_PEER_GONE
	}
	ch.cancel() // first: a writer waiting for room on the channel gives up (ErrPeerGone) and lets go of sw
	c.dir.lockSwitch()
	ch.retired.Store(true)
	c.dir.mu.Lock()
	if c.dir.out[ch.peer] == ch {
		delete(c.dir.out, ch.peer)
	}
	c.dir.mu.Unlock()
	c.dir.sw.Unlock()
	ch.mu.Lock()
	ids := make([]uint64, 0, len(ch.pending))
	for id := range ch.pending {
		ids = append(ids, id)
	}
	clear(ch.pending)
	ch.mu.Unlock()
	var why []byte
	if code == pb.Code_CODE_UNDELIVERABLE {
		why = []byte(ch.peer + " is not reading: its queue dropped the direct channel's start")
	}
	for _, id := range ids {
		c.reply(id, code, why)
	}
	ch.cancel()
	ch.wake() // a caller parked on the reply ring sees its reply
}

// directServedCancel cancels the requests from a responder's channel
// still being served: their caller is gone (or ended the channel).
func (c *Conn) directServedCancel(ch *dchan, code pb.Code) {
	cause := context.Canceled
	if code == pb.Code_CODE_PEER_GONE {
		cause = ErrPeerGone
	}
	c.emu.Lock()
	var rs []*PeerRequest
	for h, r := range c.served {
		if isDirectHandle(h) && binary.LittleEndian.Uint64(h[:])&^(1<<63) == ch.id {
			rs = append(rs, r)
			delete(c.served, h)
		}
	}
	c.emu.Unlock()
	for _, r := range rs {
		r.cancel(cause)
	}
}

// directRead is a responder's channel goroutine: once the start marker
// came, it reads the requests (under evmu, as the event reader) and serves
// each it can itself: the handler runs here and its reply is written here
// (client_direct_serve.go); the rest go to the event queue as routed ones.
// It spins a while (shm.Spinner, the Conn's spin) before it parks on the
// ring's data bell. It unmaps the channel when it exits. (A caller's end
// has no reader goroutine: its callers read their replies themselves,
// client_direct_wait.go.)
func (c *Conn) directRead(ch *dchan) {
	defer c.directClose(ch)
	defer ch.watchT.Stop()
	select {
	case <-ch.started:
	case <-ch.ctx.Done():
		return
	}
	for ch.ctx.Err() == nil {
		if d := directReaderLag.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		// The consumer is the event reader's while it holds evmu (a fence
		// drains it there too): outside, this goroutine looks only at the
		// ring's shared words.
		c.evmu.Lock()
		ok, r := c.directDrain(ch, false, true)
		ended := ch.ended
		c.evmu.Unlock()
		if r != nil {
			c.directServe(ch, r)
			continue
		}
		if !ok {
			return
		}
		if ended { // keep it for the answers still to come
			ch.mu.Lock()
			ch.done = true
			open := ch.open
			ch.mu.Unlock()
			if open > 0 {
				select {
				case <-ch.quiet:
				case <-ch.ctx.Done():
				}
			}
			return
		}
		if !c.eventRoom() { // the event queue is full: wait for room, as the pump does
			time.Sleep(time.Millisecond)
			continue
		}
		if ch.spin.Spin(ch.spinFn) {
			continue
		}
		// Announce the sleep (directDrain released what it read: only the
		// shared word is written), then look once more in readyFn.
		ch.cons.Rearm()
		err := ch.bell.WaitUntil(context.Background(), ch.readyFn) // the channel's end shuts the bell
		ch.cons.Disarm()
		if err != nil {
			return
		}
	}
}

// directReplies hands the replies on a caller's channel to their callers;
// false: the peer broke the protocol (counted; what is in flight fails).
// The caller holds ch.rd.
func (c *Conn) directReplies(ch *dchan) bool {
	defer ch.cons.Release()
	for {
		f, err := ch.cons.Next()
		if err == shm.ErrRingEmpty {
			return true
		}
		if err == nil && f.Kind != pb.KindReply {
			err = shm.ErrCorrupt
		}
		var m pb.Message
		whole := true
		if err == nil {
			m, whole, err = ch.reasm.Add(f)
		}
		if err != nil {
			c.dir.corrupt.Add(1)
			c.directFail(ch, pb.Code_CODE_PROTOCOL_VIOLATION)
			return false
		}
		if !whole {
			continue
		}
		ch.mu.Lock()
		_, ok := ch.pending[m.ID]
		delete(ch.pending, m.ID)
		ch.mu.Unlock()
		if !ok { // canceled, or never asked: a peer cannot answer another channel's calls
			c.dir.late.Add(1)
			if ch.abandoned.Add(-1) < 0 {
				ch.abandoned.Store(0) // never asked: nothing was abandoned
			}
			continue
		}
		body := m.Body
		if !m.Owned {
			body = append([]byte(nil), body...)
		}
		c.reply(m.ID, pb.PeerCode(pb.Code(m.Aux)), body)
	}
}

// directReaderLag, set by tests only, delays a responder's channel
// goroutine before it reads (nanoseconds): a reader that lags behind the
// event reader.
var directReaderLag atomic.Int64

// directDrain serves what waits in a responder's channel, as events would
// be: requests to the request handler (or as events), messages as events.
// It stops while the event queue is full, unless all (a fence: what the
// channel holds came before the event about to be queued; at most a
// ring's worth). With serve (the channel goroutine only), it stops at a
// request that goroutine may run itself, and returns it (directServe).
// The caller holds evmu. False: the peer broke the protocol (the channel
// is ended, counted).
func (c *Conn) directDrain(ch *dchan, all, serve bool) (bool, *PeerRequest) {
	if ch.draining || ch.ended || ch.ctx.Err() != nil {
		return true, nil
	}
	select {
	case <-ch.started:
	default:
		return true, nil // not yet: the routed messages before the marker come first
	}
	// A fence drains from the event reader while the channel goroutine
	// may be ending: directClose unmaps under umu (draining, checked
	// above, keeps a nested call from taking it twice).
	ch.umu.Lock()
	defer ch.umu.Unlock()
	if ch.gone {
		return true, nil
	}
	ch.draining = true
	defer func() { ch.draining = false }()
	defer ch.cons.Release()
	me := c.Address()
	for !ch.ended && (all || c.eventRoom()) {
		f, err := ch.cons.Next()
		if err == shm.ErrRingEmpty {
			return true, nil
		}
		var r *PeerRequest
		if err == nil {
			r, err = c.directFrame(ch, f, me, serve)
		}
		if err != nil {
			c.dir.corrupt.Add(1)
			ch.ended = true
			c.directServedCancel(ch, pb.Code_CODE_CANCELED)
			body, _ := gproto.Marshal(&pb.DirectRef{Id: ch.id})
			c.send(context.Background(), pb.BusService, pb.BusDirectClose, [][]byte{body})
			ch.cancel()
			return false, nil
		}
		if r != nil {
			return true, r
		}
	}
	return true, nil
}

// directFrame serves one frame of a responder's channel (untrusted); a
// request the channel goroutine may serve itself (serve, and directClaim)
// is returned instead of queued.
func (c *Conn) directFrame(ch *dchan, f shm.Frame, me string, serve bool) (*PeerRequest, error) {
	switch f.Kind {
	case pb.KindDirectEnd:
		ch.ended = true
		return nil, nil
	case pb.KindDirectCancel:
		h := directHandle(ch.id, f.ID)
		c.emu.Lock()
		r := c.served[h]
		delete(c.served, h)
		c.emu.Unlock()
		if r != nil {
			cause := context.Canceled
			if pb.Code(f.Aux) == pb.Code_CODE_DEADLINE_EXCEEDED {
				cause = context.DeadlineExceeded
			}
			r.cancel(cause)
		}
		return nil, nil
	case pb.KindPeerCall, pb.KindPeerSend:
	default:
		return nil, shm.ErrCorrupt
	}
	m, whole, err := ch.reasm.Add(f)
	if err != nil || !whole {
		return nil, err
	}
	if f.Kind == pb.KindPeerSend {
		c.pushEvent(&Event{Service: pb.BusService, Command: pb.MsgDirect, Payload: pb.AppendMsg(nil, ch.peer, me, nil, m.Body)})
		return nil, nil
	}
	h := directHandle(ch.id, m.ID)
	ch.mu.Lock()
	ch.open++
	ch.mu.Unlock()
	if serve && c.directClaim() {
		body := m.Body
		if !m.Owned { // a view of the ring, released before the handler runs
			body = append([]byte(nil), body...)
		}
		r := c.newRequest(ch.peer, me, h, m.Aux, body)
		c.emu.Lock()
		if c.served == nil {
			c.served = map[[pb.ReplyHandleSize]byte]*PeerRequest{}
		}
		c.served[h] = r // for KindDirectCancel and the channel's end
		c.emu.Unlock()
		return r, nil
	}
	c.pushEvent(&Event{Service: pb.BusService, Command: pb.MsgRequest, Payload: pb.AppendRequest(nil, ch.peer, me, h[:], m.Aux, m.Body)})
	return nil, nil
}

// directReply writes a responder's answer on its channel; an answer for a
// channel that ended is dropped and counted.
func (c *Conn) directReply(handle [pb.ReplyHandleSize]byte, code pb.Code, payload []byte) error {
	id := binary.LittleEndian.Uint64(handle[:]) &^ (1 << 63)
	c.dir.mu.Lock()
	ch := c.dir.byID[id]
	c.dir.mu.Unlock()
	if ch == nil || ch.caller {
		c.dir.late.Add(1)
		return nil
	}
	ch.wmu.Lock()
	closed := ch.closed
	var err error
	if !closed {
		err = pb.WriteMessage(ch.ctx, ch.ctx, ch.prod, shm.Header{Kind: pb.KindReply, Aux: uint32(code), ID: binary.LittleEndian.Uint64(handle[8:])}, false, payload)
	}
	ch.wmu.Unlock()
	if closed {
		c.dir.late.Add(1)
		return nil
	}
	// After the write: once quiet, the channel goroutine ends the channel.
	ch.mu.Lock()
	if ch.open--; ch.open == 0 && ch.done {
		close(ch.quiet)
	}
	ch.mu.Unlock()
	return err
}

// directStarted handles MsgDirectStart, in the event reader (evmu held):
// the channel's frames come after the events read so far.
func (c *Conn) directStarted(body []byte) {
	if len(body) != 8 {
		c.dropped.Add(1)
		return
	}
	id := binary.LittleEndian.Uint64(body)
	c.dir.mu.Lock()
	ch := c.dir.byID[id]
	if ch == nil && len(c.dir.early) < 2*MaxDirectChannels {
		// Its descriptors are on their way on the socket (the node sent
		// them first): directControl starts it when they come.
		c.dir.early[id] = true
		c.dir.mu.Unlock()
		return
	}
	c.dir.mu.Unlock()
	if ch == nil || ch.caller {
		c.dropped.Add(1)
		return
	}
	ch.once.Do(func() { close(ch.started) })
}

// directFence serves what the channels from peer from hold before an
// event from it (evmu held): what it wrote there came before. It walks the
// slice outside dir.mu: directClose replaces the slice, never edits it.
func (c *Conn) directFence(from []byte) {
	c.dir.mu.Lock()
	chs := c.dir.in[string(from)]
	c.dir.mu.Unlock()
	for _, ch := range chs {
		c.directDrain(ch, true, false)
	}
}

// directClose unmaps a channel and forgets it (its reader, on exit).
func (c *Conn) directClose(ch *dchan) {
	ch.cancel()
	ch.link.Shutdown() // a caller parked on the reply ring wakes (ErrClosed) and lets go of rd
	if ch.caller {
		ch.rd.Lock() // no caller reads the reply ring any more, nor will
		ch.unmapped = true
		defer ch.rd.Unlock()
	}
	ch.umu.Lock() // no fence drains the responder's ring any more, nor will
	ch.gone = true
	ch.wmu.Lock() // a writer waiting for room gave up: the channel's ctx ended
	ch.mu.Lock()
	ch.closed = true
	ch.link.Close()
	ch.mu.Unlock()
	ch.wmu.Unlock()
	ch.umu.Unlock()
	c.dir.mu.Lock()
	delete(c.dir.byID, ch.id)
	if c.dir.out[ch.peer] == ch {
		delete(c.dir.out, ch.peer)
	}
	// A new slice, not the old one compacted: a fence may be walking the
	// old one outside dir.mu (directFence).
	in := make([]*dchan, 0, len(c.dir.in[ch.peer]))
	for _, o := range c.dir.in[ch.peer] {
		if o != ch {
			in = append(in, o)
		}
	}
	if len(in) == 0 {
		delete(c.dir.in, ch.peer)
	} else {
		c.dir.in[ch.peer] = in
	}
	c.dir.mu.Unlock()
	c.dir.closedN.Add(1)
	if ch.caller {
		c.directFail(ch, pb.Code_CODE_PEER_GONE) // anything still in flight
	}
}
