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
	ends     sentLog       // under wmu
	accepted atomic.Uint64 // messages accepted
	unsent   atomic.Uint64 // set by Close: accepted and never taken
	closeErr error         // set once by Close

	gmu    sync.Mutex
	groups map[string]bool // under gmu: the groups subscribed to, for Drain

	mark     atomic.Pointer[[]byte] // Drain's marker, while it waits for it
	markSeen chan struct{}          // closed when the marker reached its place
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
func (c *Conn) noteSent(h shm.Header) {
	switch h.Kind {
	case pb.KindSend, pb.KindPeerSend, pb.KindPublish, pb.KindPeerReply:
	default:
		return
	}
	if h.Flags&pb.FlagWantAnswer != 0 {
		return
	}
	c.flush.accepted.Add(1)
	c.flush.ends.trim(c.req.Consumed())
	c.flush.ends.add(c.req.Position())
}

// Flush returns once the node has taken every message this client
// accepted before the call (sends, publications, messages to peers,
// answers to peer requests): read from the request ring, or, with the
// socket transport, read from the socket by the node and served in order
// (the node answers a BusSync call behind them). Taken means the node
// routed it: a publication reached its group's members' queues, as far as
// their queues had room (a member's drop is counted as a gap at the
// member). If ctx ends, or the connection, first, Flush returns an
// *UnsentError with how many of them the node had not taken.
func (c *Conn) Flush(ctx context.Context) error {
	c.wmu.Lock()
	if c.closed {
		c.wmu.Unlock()
		return ErrClosed
	}
	target := c.req.Position()
	c.wmu.Unlock()
	if c.bridge != nil {
		err := c.busCall(ctx, pb.BusSync, nil, nil)
		if err == nil || errors.Is(err, ErrUnknownCommand) { // an older node: answered in order too
			return nil
		}
		return c.unsentError(target, err)
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for wait := 10 * time.Microsecond; ; wait = min(2*wait, time.Millisecond) {
		if c.mapMu.TryRLock() { // fails only while Close unmaps
			if !c.closing.Load() && c.req.Consumed() >= target {
				c.mapMu.RUnlock()
				return nil
			}
			c.mapMu.RUnlock()
		}
		t.Reset(wait)
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
// not counted: a live node reads them, even after the goodbye).
func (c *Conn) unsentError(target uint64, err error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return err
	}
	n := c.flush.ends.between(c.req.Consumed(), target)
	if n == 0 {
		return err
	}
	return &UnsentError{Unsent: n, Err: err}
}

// flushForClose is Close's flush, bounded by WithCloseTimeout; it returns
// why the node may not have taken everything (nil: it did).
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
	if err := c.Flush(ctx); errors.As(err, &ue) {
		return ue.Err
	} else if err != nil {
		return err
	}
	return nil
}

// settleUnsent counts, as Close unmaps the rings, the accepted messages
// the node never took, and makes them Close's error. The caller holds wmu;
// cause is why (nil: Flush succeeded, and they came after it).
func (c *Conn) settleUnsent(cause error) {
	n := c.flush.ends.between(c.req.Consumed(), ^uint64(0))
	if n == 0 {
		return
	}
	if cause == nil {
		cause = ErrClosed
	}
	c.flush.unsent.Store(n)
	c.flush.closeErr = &UnsentError{Unsent: n, Err: cause}
}

// noteGroup records a subscription (or its end), for Drain.
func (c *Conn) noteGroup(group string, member bool) {
	c.flush.gmu.Lock()
	defer c.flush.gmu.Unlock()
	if c.flush.groups == nil {
		c.flush.groups = map[string]bool{}
	}
	if member {
		c.flush.groups[group] = true
	} else {
		delete(c.flush.groups, group)
	}
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
//     never sees it.) A publication the node was routing to this client
//     just as the unsubscription took effect may arrive after that point:
//     it waits in the event queue (FlowControl.EventsWaiting) and is not
//     delivered after Drain returns.
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
	c.flush.gmu.Lock()
	var groups []string
	for g := range c.flush.groups {
		if !isNoticeGroup(g) {
			groups = append(groups, g)
		}
	}
	c.flush.gmu.Unlock()
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

// drainEvents sends a marker to this client itself and waits until it
// comes out of the event queue: every event read before it has been
// handed to the application.
func (c *Conn) drainEvents(ctx context.Context) error {
	token := make([]byte, 24)
	copy(token, "\x00sb-drain:")
	rand.Read(token[10:])
	seen := make(chan struct{})
	c.flush.markSeen = seen
	c.flush.mark.Store(&token)
	defer c.flush.mark.Store(nil)
	if err := c.SendTo(ctx, c.Address(), token); err != nil {
		return err
	}
	select {
	case <-seen:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.gone:
		return c.err()
	}
	if c.o.onEvent != nil || c.o.actorPID != nil {
		return nil // the marker was dispatched: the events before it were too
	}
	for wait := 10 * time.Microsecond; c.FlowControl().EventsWaiting > 0; wait = min(2*wait, time.Millisecond) {
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

// drainMarked reports whether e is Drain's marker, and if so notes that
// it arrived. dispatch asks (handler and actor modes: the marker is
// handed over in turn), and busIntercept (the other modes: it is never
// queued).
func (c *Conn) drainMarked(e *Event, dispatching bool) bool {
	p := c.flush.mark.Load()
	if p == nil || e.Kind != EventMessage || dispatching != (c.o.onEvent != nil || c.o.actorPID != nil) ||
		e.From != c.Address() || !bytes.Equal(e.Payload, *p) {
		return false
	}
	if dispatching {
		c.received.Add(^uint64(0)) // queued and counted, but no event of the application's
	}
	if c.flush.mark.CompareAndSwap(p, nil) {
		close(c.flush.markSeen)
	}
	return true
}
