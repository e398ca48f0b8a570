package switchboard

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// Direct peer channels, the client's side (FEATURE_DIRECT_PEERS; the node's
// side is node_direct.go, the protocol WIRE.md's "Direct peer channels",
// the state machine, ordering argument and lock order ARCHITECTURE.md's).
// A caller's Request and SendTo to an address whose channel is active are
// written to the channel's request ring; the responder's end reads it (on
// a goroutine of the channel's, or in the event reader at a fence) and
// hands the requests to the same code as routed ones.

// WithDirectPeers lets requests to a peer's address go over a direct
// channel the node brokers between the two clients (after the first
// request to it routed through the node), or not. Off by default for now.
// Requests, replies, deadlines, cancellation and errors are the same
// either way; the node routes instead while a monitor watches either end,
// after a policy change, for names and groups, and for GoRequest.
func WithDirectPeers(on bool) DialOption {
	return dialOption(func(o *dialOptions) error {
		if on {
			o.features |= uint32(pb.Feature_FEATURE_DIRECT_PEERS)
		} else {
			o.features &^= uint32(pb.Feature_FEATURE_DIRECT_PEERS)
		}
		return nil
	})
}

// directIdle is how long a caller keeps a channel nobody used.
const directIdle = 5 * time.Second

// directRetry is how many routed requests to an address a refused or
// failed channel waits for before the caller asks again.
const directRetry = 64

// directSet is a Conn's direct channels. Lock order: sw → mu, and sw →
// dchan.rd → dchan.wmu → dchan.mu, all before the Conn's own (sw is taken
// before pmu and wmu by routed sends; mu and dchan.mu are leaves, dchan.wmu
// is held across a ring write).
type directSet struct {
	sw      sync.RWMutex // shared: a send to an address; exclusive: a path switch, only by lockSwitch (never queued)
	mu      sync.Mutex
	out     map[string]*dchan // active channels, by the responder's address
	in      map[string][]*dchan
	byID    map[uint64]*dchan
	seen    map[string]int  // routed requests per address since the last attempt
	arrived chan struct{}   // closed and replaced when a DirectChannel arrives
	early   map[uint64]bool // responder: markers read before their channel's descriptors

	requests, sends, opened, closedN, refused, corrupt, late atomic.Uint64
}

// dchan is one end of a channel.
type dchan struct {
	id     uint64
	peer   string
	caller bool
	link   *shm.Link
	prod   *shm.Producer
	cons   *shm.Consumer
	ctx    context.Context
	cancel context.CancelFunc

	// wmu is held across a write on prod (which may wait for room), mu
	// only briefly: a reader that needs mu (a reply's call, a request's
	// count) never waits for a writer that waits for the peer, which may
	// be waiting for that reader (the peer's writes to the other ring).
	wmu     sync.Mutex           // prod; before mu
	mu      sync.Mutex           // closed, pending, open, done
	closed  bool                 // unmapped, or about to be (written under wmu and mu)
	pending map[uint64]time.Time // caller: call ids in flight on it, and their deadlines (zero: none)
	retired atomic.Bool          // caller: no new request; ends once pending is empty
	last    atomic.Int64         // caller: unix nanoseconds of the last request
	started chan struct{}        // responder: closed at MsgDirectStart
	open    int                  // responder: requests read and not yet answered (under mu)
	done    bool                 // responder: the end marker was read (under mu)
	quiet   chan struct{}        // responder: closed when done and open is 0
	once    sync.Once
	// The ring this end reads: its data bell, waited on by one goroutine
	// at a time (the caller's reader, the responder's channel goroutine or
	// its watcher), and their conditions, made once (no allocation per
	// wait).
	bell            *shm.Doorbell
	spin            *shm.Spinner // under rd (caller), or the channel goroutine's (responder)
	readyFn, spinFn func() bool
	// reasm: the responder's under the Conn's evmu, the caller's under rd.
	reasm pb.Reassembly
	// responder, under the Conn's evmu:
	ended    bool // KindDirectEnd read
	draining bool
	// umu: held by directDrain (under evmu) and by directClose around
	// the unmap (after rd, before wmu), so that a fence never reads a
	// ring the channel goroutine is unmapping.
	umu  sync.Mutex
	gone bool // under umu: the rings are unmapped
	// responder: a request served on the channel goroutine (client_direct_serve.go).
	svc     atomic.Int32  // svcIdle, svcRunning (a handler runs on the channel goroutine), svcWatched (the watcher reads meanwhile)
	watchT  *time.Timer   // starts the watcher when a handler runs long
	watched chan struct{} // the watcher's exit
	// caller: the reply ring's reader (client_direct_wait.go).
	rd        sync.Mutex    // the consumer, reasm, spin, leadCall, unmapped: held by one waiting caller (or the keeper)
	leadCall  *call         // under rd: the call of the caller reading
	unmapped  bool          // under rd (and mu): the rings are gone
	lead      chan struct{} // a token: the reader's role is free while callers wait
	kick      chan struct{} // a token for the keeper: retired, abandoned, or a call ended
	abandoned atomic.Int64  // calls given up whose replies may still come (late)
}

func (c *Conn) directOn() bool { return c.dir != nil }

// wake wakes the goroutine parked on the channel's data bell, if one is,
// unless the channel is unmapped already (a retired channel may end at
// any moment).
func (ch *dchan) wake() {
	ch.mu.Lock()
	if !ch.closed {
		ch.cons.Wake()
	}
	ch.mu.Unlock()
}

// poke wakes a caller's keeper (directKeep); a responder has none.
func (ch *dchan) poke() {
	select {
	case ch.kick <- struct{}{}:
	default:
	}
}

// lockSwitch takes sw exclusively without ever queueing for it: a writer
// that waits for room on a full channel ring (a responder that does not
// read) holds sw shared, and a queued Lock would hold up every later
// RLock, the routed sends to every other peer with them. Only the switch
// waits, polling, until no send is under way; sends never wait for it.
func (d *directSet) lockSwitch() {
	wait := 20 * time.Microsecond
	for !d.sw.TryLock() {
		time.Sleep(wait)
		wait = min(2*wait, time.Millisecond)
	}
}

// initDirect sets the Conn up for channels if the node granted them.
func (c *Conn) initDirect(features uint32) {
	if features&uint32(pb.Feature_FEATURE_DIRECT_PEERS) == 0 || c.bridge != nil {
		return
	}
	c.dir = &directSet{out: map[string]*dchan{}, in: map[string][]*dchan{}, byID: map[uint64]*dchan{},
		seen: map[string]int{}, arrived: make(chan struct{}), early: map[uint64]bool{}}
}

// directHandle is the reply handle of request call on channel id: the
// top bit of its first word, never set in the node's (a connection id),
// marks it.
func directHandle(id, call uint64) (h [pb.ReplyHandleSize]byte) {
	binary.LittleEndian.PutUint64(h[:], id|1<<63)
	binary.LittleEndian.PutUint64(h[8:], call)
	return h
}

func isDirectHandle(h [pb.ReplyHandleSize]byte) bool { return h[7]&0x80 != 0 }

// directFor returns the active channel to address to, and notes a routed
// request otherwise (asking for a channel after the first). The caller
// holds dir.sw shared.
func (c *Conn) directFor(to string, note bool) *dchan {
	d := c.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch := d.out[to]; ch != nil && !ch.retired.Load() {
		return ch
	}
	if note && strings.HasPrefix(to, ":") && len(to) <= pb.MaxNameLen && to != c.Address() && !c.closing.Load() {
		if len(d.seen) >= 4096 { // bounded: a client that calls many peers forgets the counts
			clear(d.seen)
		}
		d.seen[to]++
		if d.seen[to] == 1 {
			d.seen[to] = 1 - 1<<30 // no second attempt while this one runs
			c.wg.Go(func() { c.directOpen(to) })
		}
	}
	return nil
}

// directRequest writes a request on ch; its reply comes on the channel's
// reply ring (directRead), to the same pending entry as a routed one's.
func (c *Conn) directRequest(ctx context.Context, ch *dchan, parts [][]byte) (uint64, *call, error) {
	if n := partsLen(parts); n > c.maxMsg {
		return 0, nil, codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", n, c.maxMsg))
	}
	h := shm.Header{Kind: pb.KindPeerCall}
	dl, ok := ctx.Deadline()
	if ok {
		us := time.Until(dl).Microseconds()
		if us <= 0 {
			return 0, nil, context.DeadlineExceeded
		}
		h.Aux = uint32(min(us, math.MaxUint32))
	}
	id := c.nextID.Add(1)
	h.ID = id
	cl := callPool.Get().(*call)
	cl.parked = time.Time{}
	c.pmu.Lock()
	if err := c.goneErr; err != nil {
		c.pmu.Unlock()
		callPool.Put(cl)
		return 0, nil, err
	}
	c.pending[id] = cl
	c.pmu.Unlock()
	ch.last.Store(time.Now().UnixNano())
	ch.mu.Lock()
	ch.pending[id] = dl // before the write: the reply may come at once
	ch.mu.Unlock()
	ch.wmu.Lock()
	err := ErrPeerGone
	if !ch.closed {
		err = pb.WriteMessage(ctx, ch.ctx, ch.prod, h, false, parts...)
	}
	ch.wmu.Unlock()
	if err != nil {
		ch.mu.Lock()
		delete(ch.pending, id)
		ch.mu.Unlock()
		if c.forget(id) {
			callPool.Put(cl)
		}
		if ch.ctx.Err() != nil {
			err = ErrPeerGone
		}
		return 0, nil, err
	}
	c.dir.requests.Add(1)
	return id, cl, nil
}

// directSend writes a message (SendTo) on ch.
func (c *Conn) directSend(ctx context.Context, ch *dchan, parts [][]byte) error {
	if n := partsLen(parts); n > c.maxMsg {
		return codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", n, c.maxMsg))
	}
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	if ch.closed {
		return ErrPeerGone
	}
	c.dir.sends.Add(1)
	return pb.WriteMessage(ctx, ch.ctx, ch.prod, shm.Header{Kind: pb.KindPeerSend, ID: c.nextID.Add(1)}, false, parts...)
}

// directCancel tells the responder that call id's caller stopped waiting,
// if the call went over a channel.
func (c *Conn) directCancel(id uint64) bool {
	if c.dir == nil {
		return false
	}
	c.dir.mu.Lock()
	var chs []*dchan
	for _, ch := range c.dir.byID {
		if ch.caller {
			chs = append(chs, ch)
		}
	}
	c.dir.mu.Unlock()
	for _, ch := range chs {
		ch.mu.Lock()
		dl, ok := ch.pending[id]
		delete(ch.pending, id)
		ch.mu.Unlock()
		if ok {
			why := pb.Code_CODE_CANCELED
			if !dl.IsZero() && !time.Now().Before(dl) {
				why = pb.Code_CODE_DEADLINE_EXCEEDED
			}
			ch.wmu.Lock()
			if !ch.closed {
				ch.prod.TryWrite(shm.Header{Kind: pb.KindDirectCancel, ID: id, Aux: uint32(why)}) // full: the deadline still ends it there
			}
			ch.wmu.Unlock()
			ch.abandoned.Add(1) // its reply may still come: the keeper reads it if no caller does
			ch.poke()
			return true
		}
	}
	return false
}

// directRouted is called before a routed send to an address that must
// stay in order with what went direct (GoRequest, SendTo WantAnswer):
// the channel to it, if any, is retired first.
func (c *Conn) directRouted(to string) {
	if c.dir == nil {
		return
	}
	c.dir.mu.Lock()
	ch := c.dir.out[to]
	c.dir.mu.Unlock()
	if ch != nil {
		c.directRetire(ch)
	}
}

// directRetire stops new requests on a caller's channel: the end marker
// goes into the ring before any later routed frame, under sw (see
// ARCHITECTURE.md, ordering). directRead ends it once pending is empty.
func (c *Conn) directRetire(ch *dchan) {
	c.dir.lockSwitch()
	if !ch.retired.Swap(true) {
		c.dir.mu.Lock()
		if c.dir.out[ch.peer] == ch {
			delete(c.dir.out, ch.peer)
		}
		c.dir.mu.Unlock()
		// Only tried: a responder that does not read must not hold up the
		// switch (and so every routed send). The marker only lets it stop
		// reading early; the order rests on its fence, and DirectClose ends
		// the channel there anyway.
		ch.wmu.Lock()
		if !ch.closed {
			ch.prod.TryWrite(shm.Header{Kind: pb.KindDirectEnd})
		}
		ch.wmu.Unlock()
	}
	c.dir.sw.Unlock()
	ch.poke() // the keeper ends it once no call is in flight
}

// directOpen asks the node for a channel to address to, waits for its
// descriptors, and switches to it at a point in the request stream the
// node marks for the responder (BusDirectStart). Started by directFor, in
// wg.
func (c *Conn) directOpen(to string) {
	ok := false
	defer func() {
		if !ok {
			c.dir.refused.Add(1)
			c.dir.mu.Lock()
			c.dir.seen[to] = -directRetry
			c.dir.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(c.life, 2*time.Second)
	defer cancel()
	var ref pb.DirectRef
	if err := c.busCall(ctx, pb.BusDirectOpen, &pb.BusName{Name: to}, &ref); err != nil {
		return
	}
	var ch *dchan
	for ch == nil {
		c.dir.mu.Lock()
		ch = c.dir.byID[ref.GetId()]
		wait := c.dir.arrived
		c.dir.mu.Unlock()
		if ch != nil {
			break
		}
		select {
		case <-wait:
		case <-ctx.Done():
			c.directCloseAt(&ref)
			return
		}
	}
	c.dir.lockSwitch()
	err := c.busCall(ctx, pb.BusDirectStart, &ref, nil)
	if err == nil && ch.ctx.Err() == nil {
		c.dir.mu.Lock()
		c.dir.out[to] = ch
		c.dir.seen[to] = 0
		c.dir.mu.Unlock()
		ok = true
	} else {
		ch.retired.Store(true) // nothing went on it: its keeper closes it
	}
	c.dir.sw.Unlock()
	ch.poke()
	if ok {
		c.dir.opened.Add(1)
	}
}

// DirectStats counts a Conn's use of direct peer channels.
type DirectStats struct {
	Requests, Sends uint64 // requests and messages written on a channel
	Open            int    // channels this client is an end of now
	Opened, Closed  uint64 // channels switched to as a caller; channels ended (either end)
	Refused         uint64 // attempts the node refused or that failed: the requests stayed routed
	Corrupt         uint64 // channels ended because the peer wrote what does not decode
	Late            uint64 // replies for nobody waiting: the caller gave up, or the channel ended
}

// DirectStats reports the Conn's direct channels (zero without
// WithDirectPeers, or when the node did not grant them).
func (c *Conn) DirectStats() DirectStats {
	d := c.dir
	if d == nil {
		return DirectStats{}
	}
	d.mu.Lock()
	open := len(d.byID)
	d.mu.Unlock()
	return DirectStats{Requests: d.requests.Load(), Sends: d.sends.Load(), Open: open, Opened: d.opened.Load(),
		Closed: d.closedN.Load(), Refused: d.refused.Load(), Corrupt: d.corrupt.Load(), Late: d.late.Load()}
}
