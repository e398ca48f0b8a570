package switchboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// What this client accepted, and whether the node took it: Flush, Close's
// flush, Drain.
//
// A message is accepted when the call that sends it returns nil: Send,
// SendTo and Publish without WantAnswer, and a peer request's answer. It
// is taken when the node has read it from the request ring (the ring's
// consumer position passed the message's end); with the socket transport,
// when this client's socket writer took it from the local ring, and Flush
// asks the node besides (BusSync), so that Flush means the same on both.

// DefaultCloseTimeout is how long Close waits for the node to take what
// the client accepted, unless WithCloseTimeout says otherwise.
const DefaultCloseTimeout = 5 * time.Second

// WithCloseTimeout sets how long Close waits for the node to take the
// messages accepted before it (a Flush); 0 or less: Close does not wait.
// Default DefaultCloseTimeout.
func WithCloseTimeout(d time.Duration) DialOption {
	return dialOption(func(o *dialOptions) error { o.closeTimeout = &d; return nil })
}

// ErrUnsent: messages this client accepted were not handed over to the
// node. The error is an *UnsentError, which tells how many and why.
var ErrUnsent = errors.New("switchboard: accepted messages not handed over to the node")

// UnsentError is Flush's, Close's and Drain's error when messages the
// client accepted were not taken by the node. errors.Is matches ErrUnsent
// and the cause (context.DeadlineExceeded, ErrNodeGone, ErrClosed, …).
type UnsentError struct {
	Unsent uint64 // accepted messages the node had not taken
	Err    error  // why they were not
}

// Error returns "switchboard: N accepted messages not handed over to the node: CAUSE".
func (e *UnsentError) Error() string {
	return fmt.Sprintf("switchboard: %d accepted messages not handed over to the node: %v", e.Unsent, e.Err)
}

// Unwrap returns ErrUnsent and the cause.
func (e *UnsentError) Unwrap() []error { return []error{ErrUnsent, e.Err} }

// flushState is the Conn's account of what it accepted, and Drain's state.
type flushState struct {
	lmu      sync.Mutex    // a leaf: ends
	ends     sentLog       // under lmu
	last     atomic.Uint64 // the ring position where the last accepted message ends (0: none yet)
	accepted atomic.Uint64 // messages accepted
	unsent   atomic.Uint64 // set by Close: accepted and not confirmed taken
	stopped  atomic.Bool   // Close began: no new request is written
	closed   atomic.Bool   // the rings are unmapped (Conn.closed, readable without wmu)
	closeErr error         // set once by Close

	// The socket transport: under sockMu.
	byeSent    bool // the goodbye went on the socket: no frame may follow it
	sockBroken bool // a frame write failed, maybe halfway: no goodbye may follow it

	prefix atomic.Pointer[[]byte]    // the marker prefix of this Conn's Drains, once one ran
	mark   atomic.Pointer[drainMark] // the Drain that waits for its marker
}

// drainMark is one Drain's marker.
type drainMark struct {
	token    []byte
	seen     chan struct{} // closed when the marker reached its place
	seenOnce sync.Once
	done     chan struct{} // closed when its Drain stops waiting
	// pos, in the pull modes, is how many events had ever been queued
	// when the marker came: Drain waits until as many were taken out.
	pos atomic.Uint64
}

// sentLog holds, in order, the ring positions where the accepted messages
// not known to be taken end. Its length is bounded by what the ring holds.
type sentLog struct {
	ends []uint64
	head int
}

func (l *sentLog) add(end uint64) { l.ends = append(l.ends, end) }

// trim forgets the messages that end at or before consumed.
func (l *sentLog) trim(consumed uint64) {
	for l.head < len(l.ends) && l.ends[l.head] <= consumed {
		l.head++
	}
	switch {
	case l.head == len(l.ends):
		l.ends, l.head = l.ends[:0], 0
	case l.head >= 256 && 2*l.head >= len(l.ends):
		n := copy(l.ends, l.ends[l.head:])
		l.ends, l.head = l.ends[:n], 0
	}
}

// between counts the messages that end after consumed and at or before
// upTo.
func (l *sentLog) between(consumed, upTo uint64) uint64 {
	live := l.ends[l.head:]
	lo := sort.Search(len(live), func(i int) bool { return live[i] > consumed })
	hi := sort.Search(len(live), func(i int) bool { return live[i] > upTo })
	return uint64(max(hi-lo, 0))
}

// noteSent records a frame writeParts wrote, if it is a message the
// client accepted and nobody waits an answer for. The caller holds wmu.
// It touches no memory the node writes: the log is trimmed to where the
// producer last saw the node's position.
func (c *Conn) noteSent(h shm.Header) {
	switch h.Kind {
	case pb.KindSend, pb.KindPeerSend, pb.KindPublish, pb.KindPeerReply:
	default:
		return
	}
	if h.Flags&pb.FlagWantAnswer != 0 {
		return
	}
	end := c.req.Position()
	c.flush.accepted.Add(1)
	c.flush.lmu.Lock()
	c.flush.ends.trim(c.req.CachedConsumed())
	c.flush.ends.add(end)
	c.flush.lmu.Unlock()
	c.flush.last.Store(end)
}

// Flush returns once the node has taken every message this client
// accepted before the call (sends, publications, messages to peers,
// answers to peer requests): read from the request ring, or, with the
// socket transport, read from the socket by the node and served in order
// (the node answers a BusSync call behind them). Taken means the node
// routed it: a publication reached its group's members' queues, as far as
// their queues had room (a member's drop is counted as a gap at the
// member). Calls in flight are not waited for. If ctx ends, or the
// connection, first, Flush returns an *UnsentError with how many of them
// the node had not taken, or the cause alone (ctx's error, ErrClosed, …)
// if by then it had taken them all. Flush never waits for a writer blocked
// on a full ring.
func (c *Conn) Flush(ctx context.Context) error {
	if c.flush.closed.Load() {
		return ErrClosed
	}
	target := c.flush.last.Load()
	if err := c.waitTaken(ctx, target); err != nil {
		return err
	}
	if c.bridge != nil && target > 0 {
		err := c.busCall(ctx, pb.BusSync, nil, nil)
		if err == nil || errors.Is(err, ErrUnknownCommand) { // an older node: answered in order too
			return nil
		}
		return c.unsentError(target, err)
	}
	return nil
}

// waitTaken waits until the request ring's consumer passed target: the
// node read it, or, with the socket transport, it was written to the
// socket.
func (c *Conn) waitTaken(ctx context.Context, target uint64) error {
	var t *time.Timer
	for wait := 10 * time.Microsecond; ; wait = min(2*wait, time.Millisecond) {
		if c.mapMu.TryRLock() { // fails only while Close unmaps
			if !c.closing.Load() && c.req.Consumed() >= target {
				c.mapMu.RUnlock()
				return nil
			}
			c.mapMu.RUnlock()
		}
		if t == nil {
			t = time.NewTimer(wait)
			defer t.Stop()
		} else {
			t.Reset(wait)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return c.unsentError(target, ctx.Err())
		case <-c.gone:
			return c.unsentError(target, c.err())
		}
	}
}

// unsentError counts the messages accepted up to target that the node has
// not taken, and returns them with err; err alone if there are none (with
// the socket transport, the messages already written to the socket are
// not counted: a live node reads them, even after the goodbye). It does
// not take wmu, which a writer waiting for room in the ring holds.
func (c *Conn) unsentError(target uint64, err error) error {
	c.mapMu.RLock()
	defer c.mapMu.RUnlock()
	if c.flush.closed.Load() {
		return err
	}
	consumed := c.req.Consumed()
	c.flush.lmu.Lock()
	n := c.flush.ends.between(consumed, target)
	c.flush.lmu.Unlock()
	if n == 0 {
		return err
	}
	return &UnsentError{Unsent: n, Err: err}
}

// flushForClose is Close's flush, bounded by WithCloseTimeout; it returns
// why the node may not have taken everything (nil: it did). It waits only
// for the accepted messages (not for calls in flight, which Close fails),
// and with the socket transport until they are written to the socket,
// ahead of the goodbye: the node serves them before it lets go.
func (c *Conn) flushForClose() error {
	if err := c.err(); err != nil {
		return err
	}
	d := derefOr(c.o.closeTimeout, DefaultCloseTimeout)
	if d <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ue *UnsentError
	if err := c.waitTaken(ctx, c.flush.last.Load()); errors.As(err, &ue) {
		return ue.Err
	} else if err != nil {
		return err
	}
	return nil
}

// settleUnsent counts, as Close unmaps the rings, the accepted messages
// the node was not confirmed to have taken, and makes them Close's error.
// The caller holds wmu; cause is why (nil: Flush succeeded, and they came
// after it). The count is an upper bound: the node may still read some of
// them after the client stopped looking.
func (c *Conn) settleUnsent(cause error) {
	consumed := c.req.Consumed()
	c.flush.lmu.Lock()
	n := c.flush.ends.between(consumed, ^uint64(0))
	c.flush.lmu.Unlock()
	if n == 0 {
		return
	}
	if cause == nil {
		cause = ErrClosed
	}
	c.flush.unsent.Store(n)
	c.flush.closeErr = &UnsentError{Unsent: n, Err: cause}
}

// errSaidGoodbye: a frame would follow the goodbye on the socket.
var errSaidGoodbye = errors.New("switchboard: the goodbye was sent")

// sockWriter is the socket as the socket transport's sendFrames writes it
// (under sockMu): nothing after the goodbye, and no goodbye after a write
// that failed, maybe in the middle of a frame.
type sockWriter struct{ c *Conn }

func (w sockWriter) Write(b []byte) (int, error) {
	if w.c.flush.byeSent {
		return 0, errSaidGoodbye
	}
	n, err := w.c.sock.Write(b)
	if err != nil {
		w.c.flush.sockBroken = true
	}
	return n, err
}

// Drain ends the connection gracefully, as NATS's Drain does, for a
// service that restarts:
//
//  1. It leaves every group this client subscribed to, but the node's
//     notice groups (sys.*): no new group message comes; notices, direct
//     messages and requests still do until the end.
//  2. It waits until the events that reached this client before the node
//     confirmed the unsubscriptions were handed to the application: with
//     WithEventHandler, the handler returned from each; with
//     WithEventActor, each was sent to the actor; otherwise, each was
//     taken by RecvEvent, RecvEventView or TryRecvEvent. (It sends a
//     message to itself and waits for it behind them; the application
//     never sees it.) Drain does not wait for what came after the marker:
//     a publication the node was routing to this client just as the
//     unsubscription took effect, a direct message, a notice. With a
//     handler or an actor it may still be handed over during the Close;
//     RecvEvent and TryRecvEvent still return it after Drain, before the
//     connection's error.
//  3. It flushes (Flush) what this client accepted, then closes (Close).
//
// ctx bounds steps 1 to 3; Close's own flush is bounded by
// WithCloseTimeout. Drain returns Close's error if it has one (an
// *UnsentError), else the first step's error. The connection is closed
// when Drain returns, whatever the error.
func (c *Conn) Drain(ctx context.Context) error {
	err := c.drain(ctx)
	if cerr := c.Close(); cerr != nil {
		return cerr
	}
	return err
}

func (c *Conn) drain(ctx context.Context) error {
	if err := c.err(); err != nil {
		return err
	}
	joined, _ := c.rc.held.list()
	var groups []string
	for _, g := range joined {
		if !isNoticeGroup(g) {
			groups = append(groups, g)
		}
	}
	for _, g := range groups {
		if err := c.Unsubscribe(ctx, g); err != nil {
			return err
		}
	}
	if err := c.drainEvents(ctx); err != nil {
		return err
	}
	return c.Flush(ctx)
}

func isNoticeGroup(g string) bool { return len(g) > 4 && g[:4] == "sys." }

// drainMarkerTag begins the payload of every Drain marker; a random
// prefix of the connection's own follows it.
const drainMarkerTag = "\x00sb-drain:"

// drainEvents sends a marker to this client itself and waits until it
// comes out of the event queue: every event read before it has been
// handed to the application. A marker may be dropped on the way (a full
// event queue drops the oldest): it is sent again when this client learns
// of a drop, and every second. Every marker of this connection is kept
// from the application for the connection's whole life, a late one too.
// Drains run one at a time.
func (c *Conn) drainEvents(ctx context.Context) error {
	if c.flush.prefix.Load() == nil {
		p := make([]byte, len(drainMarkerTag)+16)
		copy(p, drainMarkerTag)
		rand.Read(p[len(drainMarkerTag):])
		c.flush.prefix.CompareAndSwap(nil, &p)
	}
	var seq [8]byte
	rand.Read(seq[:])
	m := &drainMark{token: append(append([]byte(nil), *c.flush.prefix.Load()...), seq[:]...),
		seen: make(chan struct{}), done: make(chan struct{})}
	for !c.flush.mark.CompareAndSwap(nil, m) { // another Drain waits for its marker: after it
		if other := c.flush.mark.Load(); other != nil {
			select {
			case <-other.done:
			case <-ctx.Done():
				return ctx.Err()
			case <-c.gone:
				return c.err()
			}
		}
	}
	defer func() {
		c.flush.mark.CompareAndSwap(m, nil)
		close(m.done)
	}()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for seen := false; !seen; {
		dropped := c.dropped.Load()
		if err := c.SendTo(ctx, c.Address(), m.token, WantAnswer()); err != nil {
			return err
		}
		for n := 1; ; n++ {
			select {
			case <-m.seen:
				seen = true
			case <-ctx.Done():
				return ctx.Err()
			case <-c.gone:
				return c.err()
			case <-t.C:
				if c.dropped.Load() == dropped && n%20 != 0 {
					continue
				}
				// Maybe the marker was dropped: send it again.
			}
			break
		}
	}
	if c.o.onEvent != nil || c.o.actorPID != nil {
		return nil // the marker was dispatched: the events before it were too
	}
	taken := func() bool { // the events queued before the marker were taken (or dropped)
		c.emu.Lock()
		defer c.emu.Unlock()
		return c.deq >= m.pos.Load()
	}
	for wait := 10 * time.Microsecond; !taken(); wait = min(2*wait, time.Millisecond) {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		case <-c.gone:
			return c.err()
		}
	}
	return nil
}

// drainMarked reports whether e is a Drain marker of this connection, and
// if it is the awaited one notes that it arrived. dispatch asks (handler
// and actor modes: the marker is handed over in turn), and busIntercept
// (the other modes: it is never queued).
func (c *Conn) drainMarked(e *Event, dispatching bool) bool {
	if e.Kind != EventMessage || len(e.Payload) < len(drainMarkerTag) || e.Payload[0] != 0 ||
		dispatching != (c.o.onEvent != nil || c.o.actorPID != nil) || e.From != c.Address() {
		return false
	}
	if p := c.flush.prefix.Load(); p == nil || !bytes.HasPrefix(e.Payload, *p) {
		return false
	}
	if dispatching {
		c.received.Add(^uint64(0)) // queued and counted, but no event of the application's
	}
	if m := c.flush.mark.Load(); m != nil && bytes.Equal(e.Payload, m.token) {
		if !dispatching { // the events before the marker are queued: they are what to wait for
			c.emu.Lock()
			m.pos.Store(c.enq)
			c.emu.Unlock()
		}
		m.seenOnce.Do(func() { close(m.seen) })
	}
	return true
}
