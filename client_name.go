package switchboard

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// NameClient is a client of one well-known name, after pacemaker's IPC API
// objects (pcmk_ipc_api_t): it follows the name's owner, telling when one
// appears and when it goes, with its address; sends requests to whoever
// owns the name; and receives the service's notifications, published to
// a group. It is built on a Conn, which it shares (see NewNameClient),
// and is safe for concurrent use.
//
// Its events come in one of three ways, chosen by its options:
//
//   - Callbacks (NameClientOptions.OnOwner, OnOwnerGone, OnNotification):
//     a goroutine of the name client calls them, in order, one at a
//     time; Close stops it and waits for it.
//   - Poll mode: Fd, a descriptor of the name client's own that polls
//     readable while events wait, and TryNext, which takes one without
//     waiting.
//   - Synchronous: Next waits for the next event.
//
// With callbacks, Next and TryNext get nothing.
//
// On a Conn dialled WithReconnect, the name client lives through the
// Conn's gaps: once the Conn is back it reads the name's owner again, and
// an owner other than the one it knew comes as NameOwnerGone (the old
// one) and NameOwner (the new one, which has a new address even if it is
// the same client, reconnected). Requests during a gap fail with
// ErrNodeGone.
type NameClient struct {
	c      *Conn
	name   string
	notify string
	o      NameClientOptions

	mu      sync.Mutex
	owner   string      // under mu: the owner as last heard ("" for none)
	synced  bool        // under mu: owner was read from the node; notices apply in order from it
	early   [][2]string // under mu: owner changes heard before that, applied after it
	queue   []NameEvent // under mu: events waiting
	dropped uint64      // under mu: notifications dropped since the last one queued
	ended   bool        // under mu: the Conn ended (or Close): no more events, fd readable for good

	wake    chan struct{} // a token: events wait
	endCh   chan struct{} // closed when ended is set
	stop    chan struct{} // closed by Close
	wg      sync.WaitGroup
	fd      int // eventfd: readable while events wait, and for good once ended
	closeMu sync.Mutex
	closed  bool // under closeMu
}

// NameClientOptions configure a NameClient.
type NameClientOptions struct {
	// Notifications is the group the service publishes its
	// notifications to ("" for none). The name client joins it.
	Notifications string
	// OnOwner is called when the name has an owner: at the start if it
	// has one, and whenever one takes it, with its address.
	OnOwner func(addr string)
	// OnOwnerGone is called when the owner lets the name go (it closed,
	// died, disowned or handed it to a standby, which OnOwner announces
	// next), with its address; and, last, when the Conn ends while the
	// name had an owner.
	OnOwnerGone func(old string)
	// OnNotification is called for each message published to the
	// Notifications group, by the owner or by anyone else allowed to
	// publish there (e.From says who).
	OnNotification func(e NameEvent)
	// Queue bounds the events waiting to be taken (default 1024). A
	// notification that finds it full is dropped, and counted in the
	// next queued notification's Dropped; owner changes are never dropped.
	Queue int
}

// NameEventKind says what a NameEvent is.
type NameEventKind int

const (
	// NameOwner: the name has an owner, at Owner.
	NameOwner NameEventKind = iota + 1
	// NameOwnerGone: the owner at Owner let the name go, or the Conn
	// ended while it owned it.
	NameOwnerGone
	// NameNotification: a message published to the notifications group
	// (From, Payload).
	NameNotification
)

// NameEvent is one event of a NameClient.
type NameEvent struct {
	Kind    NameEventKind
	Owner   string // NameOwner: the new owner's address; NameOwnerGone: the old owner's
	From    string // NameNotification: the publisher's address
	Payload []byte // NameNotification: the message, a copy the receiver may keep
	Dropped uint64 // NameNotification: notifications dropped just before this one (Queue was full)
}

// errNameCallbacks is what Next returns to a name client with callbacks.
var errNameCallbacks = errors.New("switchboard: the name client delivers its events to its callbacks")

// NewNameClient makes a client of name on c. It joins sys.names (to follow
// the name's owner) and opts.Notifications, reads the name's owner from the
// node, and starts its goroutine; ctx bounds the start.
//
// It shares c's events with c's own delivery mode, whichever it is, and
// with any other name client of c: the notices about name on sys.names
// and the messages to the notifications group go to the name client. A
// group c is a member of on its own (it had joined it before its first
// name client did, or called Subscribe for it since) stays c's too: c's
// own events get all of it, the name client's events included. A group
// the name clients joined for themselves is not c's: none of its events
// reach c's own (neither the notices about name nor those about other
// names). c.Unsubscribe of a group a name client uses keeps it joined for
// the name client, and stops c's own events of it. Close leaves the groups
// that no name client of c uses any more, unless c is a member of them on
// its own.
//
// Requests (Request, Go, Send) go to the name, so the node routes each to
// the owner of the moment: ErrUndeliverable at once when there is none,
// and ErrPeerGone at once for a request in flight when the owner goes.
func NewNameClient(ctx context.Context, c *Conn, name string, opts NameClientOptions) (*NameClient, error) {
	if err := checkDest(name); err != nil {
		return nil, err
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	nc := &NameClient{c: c, name: name, notify: opts.Notifications, o: opts, fd: fd,
		wake: make(chan struct{}, 1), endCh: make(chan struct{}), stop: make(chan struct{})}
	if err := c.tapJoin(ctx, nc); err != nil {
		unix.Close(fd)
		return nil, err
	}
	names, err := c.Names(ctx)
	if err != nil {
		c.tapLeave(nc)
		unix.Close(fd)
		return nil, err
	}
	var owner string
	for _, n := range names {
		if n.Name == name {
			owner = n.Owner
		}
	}
	nc.sync(owner)
	nc.wg.Go(nc.run)
	return nc, nil
}

// Name returns the name the client follows.
func (nc *NameClient) Name() string { return nc.name }

// Owner returns the address of the name's owner as last heard, "" for
// none. It may run ahead of the events not yet taken.
func (nc *NameClient) Owner() string {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	return nc.owner
}

// Request sends a request to the name's owner and waits for its reply, as
// Conn.Request to the name.
func (nc *NameClient) Request(ctx context.Context, payload []byte) ([]byte, error) {
	return nc.c.Request(ctx, nc.name, payload)
}

// Go starts a request to the name's owner and returns at once; its
// completion arrives on done, as Conn.GoRequest's.
func (nc *NameClient) Go(ctx context.Context, payload []byte, done chan *AsyncCall) *AsyncCall {
	return nc.c.GoRequest(ctx, nc.name, payload, done)
}

// Send sends a message to the name's owner, as Conn.SendTo to the name.
func (nc *NameClient) Send(ctx context.Context, payload []byte, opts ...MsgOption) error {
	return nc.c.SendTo(ctx, nc.name, payload, opts...)
}

// sync sets the owner read from the node, then applies the changes heard
// meanwhile.
func (nc *NameClient) sync(owner string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.owner, nc.synced = owner, true
	if owner != "" {
		nc.pushLocked(NameEvent{Kind: NameOwner, Owner: owner})
	}
	for _, ch := range nc.early {
		nc.applyLocked(ch[0], ch[1])
	}
	nc.early = nil
}

// ownerChanged hears a notice that the name went from old to new (the
// Conn's event reader calls it).
func (nc *NameClient) ownerChanged(old, new string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if !nc.synced {
		nc.early = append(nc.early, [2]string{old, new})
		return
	}
	nc.applyLocked(old, new)
}

// applyLocked follows one owner change. The node's notices about a name
// come in order, each from the owner the one before left: a notice that
// does not start from the owner known is from before the owner was read
// from the node, and already reflected in it.
func (nc *NameClient) applyLocked(old, new string) {
	if old != nc.owner || nc.ended {
		return
	}
	if old != "" {
		nc.pushLocked(NameEvent{Kind: NameOwnerGone, Owner: old})
	}
	nc.owner = new
	if new != "" {
		nc.pushLocked(NameEvent{Kind: NameOwner, Owner: new})
	}
}

// notified queues a notification (the Conn's event reader calls it).
func (nc *NameClient) notified(from string, payload []byte) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.ended {
		return
	}
	if len(nc.queue) >= nc.o.Queue {
		nc.dropped++
		return
	}
	nc.pushLocked(NameEvent{Kind: NameNotification, From: from, Payload: payload, Dropped: nc.dropped})
	nc.dropped = 0
}

// pushLocked queues e and wakes whoever takes events.
func (nc *NameClient) pushLocked(e NameEvent) {
	if len(nc.queue) == 0 && !nc.ended {
		nc.signal()
	}
	nc.queue = append(nc.queue, e)
	select {
	case nc.wake <- struct{}{}:
	default:
	}
}

// signal makes the eventfd readable.
func (nc *NameClient) signal() {
	var one [8]byte
	one[0] = 1
	unix.Write(nc.fd, one[:])
}

// end stops the events: after the owner's end (OnOwnerGone) if there was
// one, nothing more is queued, and the eventfd stays readable.
func (nc *NameClient) end() {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.ended {
		return
	}
	if nc.owner != "" {
		nc.pushLocked(NameEvent{Kind: NameOwnerGone, Owner: nc.owner})
		nc.owner = ""
	}
	nc.ended = true
	nc.signal()
	close(nc.endCh)
}

// take returns the next event, if one waits, and whether more do.
func (nc *NameClient) take() (NameEvent, bool, bool) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if len(nc.queue) == 0 {
		return NameEvent{}, false, false
	}
	e := nc.queue[0]
	nc.queue[0] = NameEvent{}
	nc.queue = nc.queue[1:]
	if len(nc.queue) == 0 {
		nc.queue = nil
		if !nc.ended {
			var b [8]byte
			unix.Read(nc.fd, b[:]) // no more events: not readable
		}
	}
	return e, true, len(nc.queue) > 0
}

// callbacks reports whether events go to callbacks.
func (nc *NameClient) callbacks() bool {
	return nc.o.OnOwner != nil || nc.o.OnOwnerGone != nil || nc.o.OnNotification != nil
}

// run is the name client's goroutine: it ends the events when the Conn
// ends and, with callbacks, calls them. Close stops it.
func (nc *NameClient) run() {
	if !nc.callbacks() {
		select {
		case <-nc.stop:
		case <-nc.c.Done():
			nc.end()
		}
		return
	}
	for {
		for e, ok, _ := nc.take(); ok; e, ok, _ = nc.take() {
			nc.dispatch(e)
		}
		select {
		case <-nc.stop:
			return
		case <-nc.c.Done():
			nc.end()
			for e, ok, _ := nc.take(); ok; e, ok, _ = nc.take() {
				nc.dispatch(e)
			}
			return
		case <-nc.wake:
		}
	}
}

func (nc *NameClient) dispatch(e NameEvent) {
	switch e.Kind {
	case NameOwner:
		if nc.o.OnOwner != nil {
			nc.o.OnOwner(e.Owner)
		}
	case NameOwnerGone:
		if nc.o.OnOwnerGone != nil {
			nc.o.OnOwnerGone(e.Owner)
		}
	case NameNotification:
		if nc.o.OnNotification != nil {
			nc.o.OnNotification(e)
		}
	}
}

func (nc *NameClient) passWake() {
	select {
	case nc.wake <- struct{}{}:
	default:
	}
}

// Next waits for the next event (synchronous mode). Once the Conn ended,
// it returns the events that came before, then the Conn's Err; after
// Close, ErrClosed. With callbacks it returns an error at once.
func (nc *NameClient) Next(ctx context.Context) (NameEvent, error) {
	if nc.callbacks() {
		return NameEvent{}, errNameCallbacks
	}
	for {
		if e, ok, more := nc.take(); ok {
			if more {
				nc.passWake()
			}
			return e, nil
		}
		select {
		case <-nc.wake:
		case <-ctx.Done():
			return NameEvent{}, ctx.Err()
		case <-nc.endCh:
			if e, ok, _ := nc.take(); ok {
				return e, nil
			}
			select {
			case <-nc.stop:
				return NameEvent{}, ErrClosed
			default:
			}
			return NameEvent{}, nc.c.Err()
		}
	}
}

// TryNext returns the next event if one waits, without waiting (poll
// mode, with Fd). Once the name client ended (its Conn ended, or Close),
// it returns the events that came before, then false for good: Err says
// why.
func (nc *NameClient) TryNext() (NameEvent, bool) {
	if nc.callbacks() {
		return NameEvent{}, false
	}
	e, ok, _ := nc.take()
	return e, ok
}

// Err returns nil while the name client runs; after Close, ErrClosed;
// after its Conn ended, the Conn's Err.
func (nc *NameClient) Err() error {
	select {
	case <-nc.stop:
		return ErrClosed
	default:
	}
	select {
	case <-nc.endCh:
		return nc.c.Err()
	default:
		return nil
	}
}

// Fd returns the name client's own descriptor (an eventfd, not the Conn's
// Fd): it polls readable while events wait to be taken with TryNext, and
// for good once the name client ended. Close closes it (take it out of
// your poll set before).
func (nc *NameClient) Fd() int { return nc.fd }

// Close stops the name client: it leaves the Conn's events (and the
// groups no other name client uses, unless the Conn is a member of them
// on its own), stops its goroutine and waits for it, a callback in progress
// included (so a callback must not call Close), and closes Fd. Events not
// taken are dropped. The Conn stays open. Close is idempotent.
func (nc *NameClient) Close() error {
	nc.closeMu.Lock()
	defer nc.closeMu.Unlock()
	if nc.closed {
		return nil
	}
	nc.closed = true
	nc.c.tapLeave(nc)
	close(nc.stop)
	nc.wg.Wait()
	nc.end()
	nc.mu.Lock()
	nc.queue = nil
	nc.mu.Unlock()
	unix.Close(nc.fd)
	return nil
}
