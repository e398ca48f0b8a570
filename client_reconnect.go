package switchboard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Coming back by itself: WithReconnect's gap (lose), the redial loop
// (reconnect), the new session put in place (install), and what the Conn
// held restored (restore), told to the application as events.

// ReconnectPolicy is how a Conn dialled WithReconnect redials a node that
// went away. Its zero value is a working policy: every field has a default.
type ReconnectPolicy struct {
	// Min is the wait before the first redial (default 10 ms); each
	// failed try doubles it, up to Max (default 1 s).
	Min, Max time.Duration
	// Jitter is the share of each wait taken off at random, in [0, 1]
	// (default 0.2), so that many clients of a restarted node do not
	// redial in step.
	Jitter float64
	// MaxAttempts bounds the redials of one gap (0: no bound). When they
	// are spent the Conn ends for good: Done closes, and Err matches the
	// reason of the gap (ErrNodeLost or ErrNodeShutdown).
	MaxAttempts int
}

// WithReconnect makes the Conn come back by itself when the node goes
// away (it shuts down, or dies: ErrNodeShutdown, ErrNodeLost), redialling
// the same socket as p says. Once back it joins its groups again, claims
// its names again (queueing as standby behind whoever took one
// meanwhile), rejoins its name clients' groups and reads their names'
// owners again.
//
// Each gap is told, in order with the other events and in the Conn's
// delivery mode (RecvEvent, TryRecvEvent and Fd, WithEventHandler,
// WithEventActor), by an EventDisconnected when it begins and an
// EventReconnected when the Conn is back and restored; Event.Reconnection
// says what happened.
//
// During a gap, calls and sends fail at once with an error that matches
// ErrNodeGone (and the gap's reason), unless their ctx asks to wait
// (WaitForReconnect); calls in flight when the node went fail with
// ErrNodeGone. Nothing is ever sent again by the Conn itself: what failed
// is the caller's to retry. Peer requests being served are cancelled
// (their context's cause is the gap's reason); an answer to one is lost.
//
// A gap is not an end: Done stays open and Err nil, and the disconnect
// handler and the event actor's *Disconnected wait for the real end:
// Close, a reason that is not the node going away (ErrSlowConsumer,
// ErrProtocol), or MaxAttempts spent.
//
// The new node's limits apply to what it sends; MaxMessage stays the
// first node's. Address changes with each reconnection (the node's run
// is part of it).
func WithReconnect(p ReconnectPolicy) DialOption {
	return dialOption(func(o *dialOptions) error {
		if p.Min < 0 || p.Max < 0 || p.Jitter < 0 || p.Jitter > 1 || p.MaxAttempts < 0 {
			return fmt.Errorf("switchboard: reconnect policy %+v: %w", p, ErrInvalidArgument)
		}
		if p.Min == 0 {
			p.Min = 10 * time.Millisecond
		}
		if p.Max == 0 {
			p.Max = max(time.Second, p.Min)
		}
		if p.Jitter == 0 {
			p.Jitter = 0.2
		}
		o.reconnect = &p
		return nil
	})
}

// delay is the wait before redial number attempt (from 1).
func (p *ReconnectPolicy) delay(attempt int) time.Duration {
	d := p.Max
	if attempt < 32 {
		d = min(p.Max, p.Min<<(attempt-1))
	}
	if cut := time.Duration(float64(d) * p.Jitter); cut > 0 {
		d -= rand.N(cut + 1)
	}
	return d
}

// Reconnected is what an EventDisconnected or EventReconnected carries
// (Event.Reconnection).
type Reconnected struct {
	// Err is why the node went: it matches ErrNodeGone, and ErrNodeLost or
	// ErrNodeShutdown.
	Err error
	// OldAddress is the Conn's address before the gap; NewAddress (for
	// EventReconnected) its address now.
	OldAddress, NewAddress string
	// Attempts is how many redials it took; Gap how long the Conn was
	// away, from the node's going to the end of the restoration.
	Attempts int
	Gap      time.Duration
	// Groups are the groups joined again, Names the names held again
	// as primary owner.
	Groups, Names []string
	// Lost are the claims lost: names someone else took during the gap.
	// The Conn queues as standby for each, and is told by a notice if it
	// becomes the owner.
	Lost []string
	// Failed is what could not be restored, each error naming its group
	// or name. If the node went again meanwhile, an EventDisconnected
	// follows.
	Failed []error
}

// Reconnection returns what an EventDisconnected or an EventReconnected
// tells, and nil for any other event.
func (e Event) Reconnection() *Reconnected { return e.gap }

// waitKey marks a context whose calls wait for a reconnection.
type waitKey struct{}

// WaitForReconnect returns a context with which a call or send on a Conn
// dialled WithReconnect, made during a gap, waits for the Conn to be back
// and restored (bounded by ctx) and is then made, instead of failing at
// once with ErrNodeGone. A call already in flight when the node goes still
// fails: nothing is sent twice. Go and GoRequest wait in the call itself.
// Without WithReconnect it changes nothing.
func WaitForReconnect(ctx context.Context) context.Context {
	return context.WithValue(ctx, waitKey{}, true)
}

// reconnState is a Conn's share of WithReconnect.
type reconnState struct {
	down     bool           // under pmu: in a gap (goneErr says why)
	back     chan struct{}  // under pmu: closed when the Conn is back and restored; nil outside gaps
	lost     chan struct{}  // a token: a gap began
	sess     sync.WaitGroup // the session's goroutines (startSession)
	sessDone chan struct{}  // closed when the session ends (endSession)
	held     held
}

func (r *reconnState) init() {
	r.lost = make(chan struct{}, 1)
	r.held.names = map[string]bool{}
}

// held is what a Conn joined (always: Drain leaves those groups) and,
// with WithReconnect, claimed: what a reconnection restores.
type held struct {
	mu     sync.Mutex
	groups map[string]bool // set by handshake
	names  map[string]bool // nil without WithReconnect
}

// group records a group joined (on) or left.
func (h *held) group(g string, on bool) { h.track(h.groups, g, on) }

// name records a name claimed (on) or let go.
func (h *held) name(n string, on bool) { h.track(h.names, n, on) }

func (h *held) track(set map[string]bool, key string, on bool) {
	if set == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		set[key] = true
	} else {
		delete(set, key)
	}
}

func (h *held) list() (groups, names []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for g := range h.groups {
		groups = append(groups, g)
	}
	for n := range h.names {
		names = append(names, n)
	}
	slices.Sort(groups)
	slices.Sort(names)
	return groups, names
}

// endsGap reports whether err ends a Conn in a gap for good: Close, or
// the attempts spent.
func endsGap(err error) bool {
	var g *gaveUpError
	return errors.Is(err, ErrClosed) || errors.As(err, &g)
}

// reconnectable reports whether err is the node going away.
func reconnectable(err error) bool {
	var g *gaveUpError
	if errors.As(err, &g) {
		return false
	}
	return errors.Is(err, ErrNodeLost) || errors.Is(err, ErrNodeShutdown)
}

// gaveUpError is Err of a Conn whose reconnection spent its attempts.
type gaveUpError struct {
	why      error
	attempts int
	last     error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%v; gave up reconnecting after %d attempts: %v", e.why, e.attempts, e.last)
}
func (e *gaveUpError) Unwrap() error { return e.why }

// lose begins a gap: calls in flight fail, the session stops, and the
// reconnection starts (which tells the application). end calls it with pmu
// held, which it releases; it runs on a session goroutine (watch, or
// sendFrames), so the session is not replaced meanwhile.
func (c *Conn) lose(err error) {
	c.goneErr, c.rc.down = err, true
	if c.rc.back == nil {
		c.rc.back = make(chan struct{})
	}
	calls := c.pending
	c.pending = map[uint64]*call{}
	c.endSession()
	c.pmu.Unlock()
	failAsync(calls, err)
	text := []byte(err.Error())
	for _, cl := range calls {
		if cl.async == nil { // as a reply: never replayed
			cl.payload, cl.code = text, pb.Code_CODE_NODE_SHUTTING_DOWN
			cl.done <- struct{}{}
		}
	}
	c.closing.Store(true)
	c.link.Shutdown()
	c.sock.Close()
	c.emu.Lock()
	for _, r := range c.served {
		if r.cancel != nil {
			r.cancel(err)
		}
	}
	c.emu.Unlock()
	select {
	case c.rc.lost <- struct{}{}:
	default:
	}
}

// awaitBack is what a call or send that found the Conn in a gap (err)
// does: with WaitForReconnect, wait until the Conn is back (nil: try
// again); otherwise return err.
func (c *Conn) awaitBack(ctx context.Context, err error) error {
	if ctx.Value(waitKey{}) == nil {
		return err
	}
	c.pmu.Lock()
	down, back := c.rc.down, c.rc.back
	c.pmu.Unlock()
	if !down {
		return err
	}
	select {
	case <-back:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("switchboard: waiting for the reconnection (%v): %w", err, ctx.Err())
	case <-c.gone:
		return c.err()
	}
}

// reconnect is the goroutine of a Conn dialled WithReconnect: after each
// gap begins, it waits for the old session's goroutines, then redials.
// The Conn's end stops it.
func (c *Conn) reconnect() {
	for {
		select {
		case <-c.rc.lost:
		case <-c.gone:
			return
		}
		c.rc.sess.Wait()
		c.takeLastEvents()
		c.pmu.Lock()
		why := c.goneErr
		c.pmu.Unlock()
		c.pushEventCounted(&Event{Kind: EventDisconnected, gap: &Reconnected{Err: why, OldAddress: c.Address()}})
		c.comeBack(why)
	}
}

// takeLastEvents moves the events the node wrote before it went from the old
// session's event ring (still mapped: install unmaps it) to the queue, so
// that they come before EventDisconnected, as far as the queue has room.
func (c *Conn) takeLastEvents() {
	c.evmu.Lock()
	defer c.evmu.Unlock()
	for c.eventRoom() && c.ev.Unreleased() {
		if c.readEvents() != nil {
			return
		}
	}
}

// comeBack redials until a node takes the Conn, the attempts are spent or
// the Conn ends; then restores what the Conn held and tells the
// application.
func (c *Conn) comeBack(why error) {
	p := c.o.reconnect
	old, began := c.Address(), time.Now()
	var last error
	for attempt := 1; ; attempt++ {
		if p.MaxAttempts > 0 && attempt > p.MaxAttempts {
			c.end(&gaveUpError{why: why, attempts: p.MaxAttempts, last: last})
			return
		}
		t := time.NewTimer(p.delay(attempt))
		select {
		case <-c.gone:
			t.Stop()
			return
		case <-t.C:
		}
		s, err := c.redial()
		if err != nil {
			last = err
			continue
		}
		if !c.install(s) {
			s.close()
			return
		}
		c.startSession()
		r := c.restore()
		r.Err, r.OldAddress, r.NewAddress, r.Attempts, r.Gap = why, old, c.Address(), attempt, time.Since(began)
		if c.ended() { // closed meanwhile: the end is the last news
			return
		}
		c.pushEventCounted(&Event{Kind: EventReconnected, gap: r})
		c.pmu.Lock()
		if !c.rc.down && c.rc.back != nil {
			close(c.rc.back)
			c.rc.back = nil
		}
		c.pmu.Unlock()
		return
	}
}

// redial dials the node's socket once and shakes hands. The Conn's end
// interrupts it.
func (c *Conn) redial() (*session, error) {
	ctx, cancel := context.WithTimeout(c.life, 10*time.Second)
	defer cancel()
	sock, err := dialSocket(ctx, c.o.socket)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { sock.Close() })
	s, err := openSession(ctx, sock, &c.o)
	if !stop() { // ctx ended: sock is closed
		if s != nil {
			s.close()
		}
		return nil, context.Cause(ctx)
	}
	if err != nil {
		sock.Close()
		return nil, err
	}
	return s, nil
}

// install puts s in place of the session that ended, holding every lock
// that guards the transport's fields (the Conn's lock order) and pmu, so
// nobody looks at the rings meanwhile. It reports false if the Conn ended
// for good meanwhile.
func (c *Conn) install(s *session) bool {
	c.mapMu.Lock()
	defer c.mapMu.Unlock()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.evmu.Lock()
	defer c.evmu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	c.pmu.Lock()
	if !c.rc.down {
		c.pmu.Unlock()
		return false
	}
	link, bridge := c.link, c.bridge
	c.useSession(s)
	c.goneErr, c.rc.down = nil, false
	c.pmu.Unlock()
	link.Close()
	if bridge != nil {
		bridge.Close()
	}
	c.closing.Store(false)
	return true
}

// restore joins the Conn's groups and claims its names again, and has its
// name clients read their names' owners again.
func (c *Conn) restore() *Reconnected {
	ctx, cancel := context.WithTimeout(c.life, 10*time.Second)
	defer cancel()
	r := &Reconnected{}
	var clients []*NameClient
	if s := c.taps.set.Load(); s != nil {
		clients = s.clients
	}
	for _, nc := range clients {
		nc.unsync()
	}
	groups, names := c.rc.held.list()
	for _, g := range groups {
		if err := c.busCall(ctx, pb.BusSubscribe, &pb.BusGroup{Group: g}, nil); err != nil {
			r.Failed = append(r.Failed, fmt.Errorf("group %s: %w", g, err))
			continue
		}
		r.Groups = append(r.Groups, g)
	}
	for _, n := range names {
		var or pb.OwnReply
		switch err := c.busCall(ctx, pb.BusOwn, &pb.BusName{Name: n}, &or); {
		case err != nil:
			r.Failed = append(r.Failed, fmt.Errorf("name %s: %w", n, err))
		case or.GetPrimary():
			r.Names = append(r.Names, n)
		default:
			r.Lost = append(r.Lost, n)
		}
	}
	if len(clients) > 0 {
		owners := map[string]string{}
		list, err := c.Names(ctx)
		if err != nil {
			r.Failed = append(r.Failed, fmt.Errorf("the names' owners: %w", err))
		}
		for _, n := range list {
			owners[n.Name] = n.Owner
		}
		for _, nc := range clients {
			nc.resync(owners[nc.name])
		}
	}
	return r
}

// unsync makes the name client hold the owner changes it hears until
// resync: the owner is read again after a reconnection.
func (nc *NameClient) unsync() {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.synced, nc.early = false, nil
}

// resync sets the owner read again after a reconnection: the owner known
// before, if another, is gone, and owner is new; then the changes heard
// meanwhile apply.
func (nc *NameClient) resync(owner string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if old := nc.owner; old != owner {
		if old != "" {
			nc.pushLocked(NameEvent{Kind: NameOwnerGone, Owner: old})
		}
		if owner != "" {
			nc.pushLocked(NameEvent{Kind: NameOwner, Owner: owner})
		}
	}
	nc.owner, nc.synced = owner, true
	for _, ch := range nc.early {
		nc.applyLocked(ch[0], ch[1])
	}
	nc.early = nil
}
