package shm

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
)

// Ring capacity limits, in bytes of data area.
const (
	MinRingCapacity = 1 << 10
	MaxRingCapacity = 1 << 30
)

// RingRegionSize returns the bytes a ring of the given data capacity needs:
// its control block plus its data area.
func RingRegionSize(capacity int) int { return ringCtlSize + capacity }

// MaxBody returns the largest frame body a ring of the given capacity
// accepts. Half the ring is the most one frame may take, so that a frame
// always fits once the ring drains, whatever padding the wrap needs.
func MaxBody(capacity int) int { return capacity/2 - HeaderSize }

func checkCapacity(c uint64) error {
	if c < MinRingCapacity || c > MaxRingCapacity || bits.OnesCount64(c) != 1 {
		return fmt.Errorf("shm: ring capacity %d is not a power of two in [%d, %d]", c, MinRingCapacity, MaxRingCapacity)
	}
	return nil
}

// ring is the shared part of a ring as one side sees it. The geometry is
// private (validated once); the counters live in the region.
type ring struct {
	head, tail, sleeping, waiting *atomic.Uint64
	data                          []byte
	size                          uint64 // capacity of data, a power of two
	mask                          uint64
	maxBody                       uint64
}

func newRing(region []byte) (ring, error) {
	if len(region) < ringCtlSize {
		return ring{}, fmt.Errorf("shm: ring region of %d bytes is smaller than its control block", len(region))
	}
	return newRingAt(region[:ringCtlSize:ringCtlSize], region[ringCtlSize:len(region):len(region)])
}

// newRingAt makes a ring of its control block ctl (ringCtlSize bytes) and
// its data area, which need not follow it.
func newRingAt(ctl, data []byte) (ring, error) {
	if !isAligned(ctl) || !isAligned(data) {
		return ring{}, fmt.Errorf("shm: ring region is not 8-byte aligned")
	}
	if len(ctl) != ringCtlSize {
		return ring{}, fmt.Errorf("shm: ring control block of %d bytes, want %d", len(ctl), ringCtlSize)
	}
	size := uint64(len(data))
	if err := checkCapacity(size); err != nil {
		return ring{}, err
	}
	return ring{
		head:     atomicWord(ctl, offHead),
		tail:     atomicWord(ctl, offTail),
		sleeping: atomicWord(ctl, offSleeping),
		waiting:  atomicWord(ctl, offWaiting),
		data:     data[:size:size],
		size:     size,
		mask:     size - 1,
		maxBody:  uint64(MaxBody(int(size))),
	}, nil
}

// Option configures a Producer or a Consumer.
type Option func(*options)

type options struct {
	data, space *Doorbell
	spin        time.Duration
	spinSet     bool
}

// WithDoorbells gives the ring end its wake-ups: data is rung by the
// producer when the consumer sleeps, space is rung by the consumer when the
// producer waits for room. Without doorbells, blocking waits spin and yield.
func WithDoorbells(data, space *Doorbell) Option {
	return func(o *options) { o.data, o.space = data, space }
}

// WithSpin sets the longest a waiter spins before it parks; 0 never spins.
// The default is DefaultSpin().
func WithSpin(d time.Duration) Option {
	return func(o *options) { o.spin, o.spinSet = d, true }
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if !o.spinSet {
		o.spin = DefaultSpin()
	}
	return o
}

// checkCounters validates a head/tail pair read from shared memory.
func (r *ring) checkCounters(head, tail uint64) error {
	if tail > head || head-tail > r.size || head%frameAlign != 0 || tail%frameAlign != 0 {
		return &FrameError{Pos: tail, Reason: fmt.Sprintf("counters out of range (head %d, tail %d)", head, tail)}
	}
	return nil
}

// Producer is the writing end of a ring. It is used by one goroutine at a
// time.
type Producer struct {
	r         ring
	o         options
	spin      spinner
	head      uint64 // local head: end of the committed frames
	published uint64 // head as last stored in shared memory
	tail      uint64 // last tail read from shared memory
	resvPos   uint64 // position of the reserved frame's header
	resvLen   int    // body bytes reserved, -1 when nothing is reserved
	err       error  // sticky: the ring is corrupt
	waitNeed  uint64 // bytes WaitSpace waits for
	spaceFn   func() bool
}

// NewProducer returns the producing end of the ring held in region
// (RingRegionSize(capacity) bytes, 8-byte aligned, counters as the creator
// left them: zero for a new ring).
func NewProducer(region []byte, opts ...Option) (*Producer, error) {
	r, err := newRing(region)
	if err != nil {
		return nil, err
	}
	return newProducer(r, opts)
}

// NewProducerAt is NewProducer for a ring whose control block (ctl) and
// data area lie apart, as a segment lays them out (Segment.Ring).
func NewProducerAt(ctl, data []byte, opts ...Option) (*Producer, error) {
	r, err := newRingAt(ctl, data)
	if err != nil {
		return nil, err
	}
	return newProducer(r, opts)
}

func newProducer(r ring, opts []Option) (*Producer, error) {
	head, tail := r.head.Load(), r.tail.Load()
	if err := r.checkCounters(head, tail); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	p := &Producer{r: r, o: o, spin: newSpinner(o.spin), head: head, published: head, tail: tail, resvLen: -1}
	p.spaceFn = p.hasSpace
	return p, nil
}

// hasSpace reports whether waitNeed bytes are free, or the ring is broken.
// The tail is not checked here; the caller checks it when this says yes.
func (p *Producer) hasSpace() bool {
	return p.err != nil || p.r.size-(p.head-p.r.tail.Load()) >= p.waitNeed
}

// MaxBody returns the largest body this ring accepts.
func (p *Producer) MaxBody() int { return int(p.r.maxBody) }

// Capacity returns the size of the ring's data area.
func (p *Producer) Capacity() int { return int(p.r.size) }

// Err returns the error that made the ring unusable, or nil.
func (p *Producer) Err() error { return p.err }

// refreshTail reads the consumer's tail and checks it.
func (p *Producer) refreshTail() error {
	t := p.r.tail.Load()
	if t < p.tail || t > p.published || p.published-t > p.r.size || t%frameAlign != 0 {
		p.err = &FrameError{Pos: p.tail, Reason: fmt.Sprintf("tail %d out of range [%d, %d]", t, p.tail, p.published)}
		return p.err
	}
	p.tail = t
	return nil
}

// need returns the bytes the next frame of n body bytes takes at the
// current head, padding to the end of the ring included.
func (p *Producer) need(n int) (pad, size uint64) {
	size = frameSize64(uint64(n))
	if off := p.head & p.r.mask; off+size > p.r.size {
		pad = p.r.size - off
	}
	return pad, size
}

func (p *Producer) fits(pad, size uint64) bool {
	return p.r.size-(p.head-p.tail) >= pad+size
}

// Reserve returns room for a body of n bytes, to be filled by the caller and
// made visible by Commit and Flush. A second Reserve abandons the first. It
// returns ErrRingFull if the consumer has not yet made room, ErrTooLarge if
// it never will.
func (p *Producer) Reserve(n int) ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	if n < 0 || uint64(n) > p.r.maxBody {
		return nil, fmt.Errorf("%w: %d bytes, ring limit %d", ErrTooLarge, n, p.r.maxBody)
	}
	p.resvLen = -1
	pad, size := p.need(n)
	if !p.fits(pad, size) {
		if err := p.refreshTail(); err != nil {
			return nil, err
		}
		if !p.fits(pad, size) {
			return nil, ErrRingFull
		}
	}
	pos := p.head
	if pad > 0 {
		off := pos & p.r.mask
		binary.LittleEndian.PutUint32(p.r.data[off+offLength:], uint32(pad))
		binary.LittleEndian.PutUint16(p.r.data[off+offKind:], KindPad)
		pos += pad
	}
	off := pos & p.r.mask
	p.resvPos, p.resvLen = pos, n
	return p.r.data[off+HeaderSize : off+HeaderSize+uint64(n) : off+HeaderSize+uint64(n)], nil
}

// Commit finishes the reserved frame with header h and the first n bytes of
// the reserved body (n may be less than reserved). The frame becomes visible
// to the consumer at the next Flush.
func (p *Producer) Commit(h Header, n int) error {
	if p.resvLen < 0 || n < 0 || n > p.resvLen {
		return ErrNotReserved
	}
	if h.Kind == 0 || h.Kind == KindPad {
		return fmt.Errorf("shm: frame kind %#x is reserved", h.Kind)
	}
	off := p.resvPos & p.r.mask
	putHeader(p.r.data[off:], h, uint32(n))
	p.head = p.resvPos + frameSize64(uint64(n))
	p.resvLen = -1
	return nil
}

// Flush publishes the committed frames and wakes the consumer if it sleeps.
func (p *Producer) Flush() {
	if bell := p.FlushLater(); bell != nil {
		bell.Ring() // an error means the doorbell is closed: the peer is gone anyway
	}
}

// FlushLater is Flush that leaves the wake-up to the caller: it publishes
// the committed frames and returns the consumer's doorbell if it sleeps
// (nil otherwise), for the caller to ring once it has let go of the
// Producer. Ringing it is safe from any goroutine, after the Producer has
// passed on or been closed (a closed doorbell's Ring fails). A writer
// that holds something another goroutine waits for (a pump's state, say)
// publishes with FlushLater, lets go, then rings: the write that wakes the
// consumer is where the scheduler may run the consumer in its place.
func (p *Producer) FlushLater() *Doorbell {
	if p.head == p.published {
		return nil
	}
	p.published = p.head
	p.r.head.Store(p.head)
	if p.r.sleeping.Load() != 0 && p.r.sleeping.CompareAndSwap(1, 0) {
		return p.o.data
	}
	return nil
}

// Buffered reports whether committed frames wait for a Flush.
func (p *Producer) Buffered() bool { return p.head != p.published }

// Unflushed returns the bytes of the frames committed since the last
// Flush: a producer writing a long batch publishes part of it once this
// is a good part of the ring, so that the consumer reads while it writes.
func (p *Producer) Unflushed() int { return int(p.head - p.published) }

// TryWrite writes one frame whose body is the concatenation of bufs
// (scatter-gather), and flushes it. It does not wait: ErrRingFull means try
// later.
func (p *Producer) TryWrite(h Header, bufs ...[]byte) error {
	if err := p.Append(h, bufs...); err != nil {
		return err
	}
	p.Flush()
	return nil
}

// Append writes one frame like TryWrite but leaves it for the next Flush,
// so that a batch of frames costs one publication and at most one wake-up.
func (p *Producer) Append(h Header, bufs ...[]byte) error {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	dst, err := p.Reserve(n)
	if err != nil {
		return err
	}
	off := 0
	for _, b := range bufs {
		off += copy(dst[off:], b)
	}
	return p.Commit(h, n)
}

// Write writes and flushes one frame, waiting for room while the ring is
// full (flow control). The wait ends with ctx's error, or ErrClosed when the
// space doorbell is closed.
func (p *Producer) Write(ctx context.Context, h Header, bufs ...[]byte) error {
	for {
		err := p.TryWrite(h, bufs...)
		if err != ErrRingFull {
			return err
		}
		n := 0
		for _, b := range bufs {
			n += len(b)
		}
		if err := p.WaitSpace(ctx, n); err != nil {
			return err
		}
	}
}

// WaitSpace flushes, then waits until a frame with an n-byte body fits.
func (p *Producer) WaitSpace(ctx context.Context, n int) error {
	if uint64(n) > p.r.maxBody {
		return fmt.Errorf("%w: %d bytes, ring limit %d", ErrTooLarge, n, p.r.maxBody)
	}
	p.Flush()
	pad, size := p.need(n)
	p.waitNeed = pad + size
	ready := p.spaceFn
	check := func() error {
		if p.err != nil {
			return p.err
		}
		if err := p.refreshTail(); err != nil {
			return err
		}
		return nil
	}
	for {
		if p.fits(pad, size) {
			return nil
		}
		if ready() || p.spin.spin(ready) {
			if err := check(); err != nil {
				return err
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.o.space == nil {
			time.Sleep(50 * time.Microsecond)
			if err := check(); err != nil {
				return err
			}
			continue
		}
		p.r.waiting.Store(1)
		parked := time.Now()
		err := p.o.space.WaitUntil(ctx, ready)
		p.spin.woke(time.Since(parked))
		p.r.waiting.CompareAndSwap(1, 0) // if it fails, the consumer rang: harmless
		if err != nil {
			return err
		}
		if err := check(); err != nil {
			return err
		}
	}
}

// Consumer is the reading end of a ring. It is used by one goroutine at a
// time.
type Consumer struct {
	r        ring
	o        options
	spin     spinner
	tail     uint64 // local tail: start of the next frame to read
	released uint64 // tail as last stored in shared memory
	head     uint64 // last head read from shared memory
	err      error  // sticky: the ring is corrupt
	readyFn  func() bool
}

// NewConsumer returns the consuming end of the ring held in region.
func NewConsumer(region []byte, opts ...Option) (*Consumer, error) {
	r, err := newRing(region)
	if err != nil {
		return nil, err
	}
	return newConsumer(r, opts)
}

// NewConsumerAt is NewConsumer for a ring whose control block and data
// area lie apart (see NewProducerAt).
func NewConsumerAt(ctl, data []byte, opts ...Option) (*Consumer, error) {
	r, err := newRingAt(ctl, data)
	if err != nil {
		return nil, err
	}
	return newConsumer(r, opts)
}

func newConsumer(r ring, opts []Option) (*Consumer, error) {
	head, tail := r.head.Load(), r.tail.Load()
	if err := r.checkCounters(head, tail); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	c := &Consumer{r: r, o: o, spin: newSpinner(o.spin), tail: tail, released: tail, head: head}
	c.readyFn = c.ready
	return c, nil
}

// ready reports whether the producer published past what was read.
func (c *Consumer) ready() bool { return c.r.head.Load() != c.tail }

// MaxBody returns the largest body this ring carries.
func (c *Consumer) MaxBody() int { return int(c.r.maxBody) }

// Err returns the error that made the ring unusable, or nil.
func (c *Consumer) Err() error { return c.err }

func (c *Consumer) corrupt(reason string) error {
	c.err = &FrameError{Pos: c.tail, Reason: reason}
	return c.err
}

// refreshHead reads the producer's head and checks it.
func (c *Consumer) refreshHead() error {
	h := c.r.head.Load()
	if h < c.head || h-c.released > c.r.size || h%frameAlign != 0 {
		return c.corrupt(fmt.Sprintf("head %d out of range [%d, %d]", h, c.head, c.released+c.r.size))
	}
	c.head = h
	return nil
}

// Next returns the next frame without copying it. The frame's body is a view
// of the ring, valid until Release; frames read since the last Release stay
// valid together, so a batch can be handled before releasing it. Next
// returns ErrRingEmpty when no frame is ready, and a *FrameError (which
// matches ErrCorrupt) when the producer broke the ring's rules; that error
// is sticky.
func (c *Consumer) Next() (Frame, error) {
	if c.err != nil {
		return Frame{}, c.err
	}
	for {
		if c.tail == c.head {
			if err := c.refreshHead(); err != nil {
				return Frame{}, err
			}
			if c.tail == c.head {
				return Frame{}, ErrRingEmpty
			}
		}
		off := c.tail & c.r.mask
		avail := c.head - c.tail
		toEnd := c.r.size - off
		length := uint64(binary.LittleEndian.Uint32(c.r.data[off+offLength:]))
		kind := binary.LittleEndian.Uint16(c.r.data[off+offKind:])
		if kind == KindPad {
			if length != toEnd {
				return Frame{}, c.corrupt(fmt.Sprintf("pad frame spans %d bytes, %d remain to the end", length, toEnd))
			}
			if toEnd > avail {
				return Frame{}, c.corrupt("pad frame beyond published data")
			}
			c.tail += toEnd
			continue
		}
		if toEnd < HeaderSize || avail < HeaderSize {
			return Frame{}, c.corrupt("frame header beyond published data or the ring's end")
		}
		h, n := getHeader(c.r.data[off:])
		length = uint64(n) // read once: the peer may change the bytes meanwhile
		switch {
		case h.Kind == 0:
			return Frame{}, c.corrupt("frame kind 0")
		case length > c.r.maxBody:
			return Frame{}, c.corrupt(fmt.Sprintf("frame length %d exceeds the ring limit %d", length, c.r.maxBody))
		}
		size := frameSize64(length)
		if size > toEnd {
			return Frame{}, c.corrupt("frame crosses the end of the ring")
		}
		if size > avail {
			return Frame{}, c.corrupt("frame extends beyond published data")
		}
		body := c.r.data[off+HeaderSize : off+HeaderSize+length : off+HeaderSize+length]
		c.tail += size
		return Frame{Header: h, Body: body}, nil
	}
}

// Held returns the bytes of the frames read since the last Release: a
// consumer reading a long batch gives part of it back once this is a good
// part of the ring, so that the producer writes while it reads.
func (c *Consumer) Held() int { return int(c.tail - c.released) }

// Release gives the frames read since the last Release back to the
// producer, and wakes it if it waits for room. Their views become invalid.
func (c *Consumer) Release() {
	if c.tail == c.released {
		return
	}
	c.released = c.tail
	c.r.tail.Store(c.tail)
	if c.r.waiting.Load() != 0 && c.r.waiting.CompareAndSwap(1, 0) && c.o.space != nil {
		c.o.space.Ring()
	}
}

// ReleaseTo gives back the frames that end at or before pos, a Position
// this consumer reached since the last Release, and keeps the views of
// the frames read after it valid: a consumer about to spend long on one
// frame hands back the ones before it.
func (c *Consumer) ReleaseTo(pos uint64) {
	if pos <= c.released || pos > c.tail {
		return
	}
	c.released = pos
	c.r.tail.Store(pos)
	if c.r.waiting.Load() != 0 && c.r.waiting.CompareAndSwap(1, 0) && c.o.space != nil {
		c.o.space.Ring()
	}
}

// Read copies the next frame's body into buf (grown as needed) and releases
// it. It returns ErrRingEmpty when no frame is ready.
func (c *Consumer) Read(buf []byte) (Frame, error) {
	f, err := c.Next()
	if err != nil {
		return Frame{}, err
	}
	buf = append(buf[:0], f.Body...)
	c.Release()
	f.Body = buf
	return f, nil
}

// Pending returns the bytes published by the producer and not yet read.
func (c *Consumer) Pending() int {
	h := c.r.head.Load()
	if h < c.tail || h-c.tail > c.r.size {
		return 0
	}
	return int(h - c.tail)
}

// Wait releases what was read, then waits until a frame is ready: it spins
// for a while if so configured, then parks on the data doorbell. It returns
// ctx's error when ctx ends, and ErrClosed when the doorbell is closed.
func (c *Consumer) Wait(ctx context.Context) error {
	c.Release()
	ready := c.readyFn
	if c.tail != c.head || ready() {
		return nil
	}
	for {
		if c.spin.spin(ready) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.o.data == nil {
			time.Sleep(50 * time.Microsecond)
			if ready() {
				return nil
			}
			continue
		}
		c.r.sleeping.Store(1)
		parked := time.Now()
		err := c.o.data.WaitUntil(ctx, ready)
		c.spin.woke(time.Since(parked))
		c.r.sleeping.CompareAndSwap(1, 0) // if it fails, the producer rang: harmless
		return err
	}
}

// Waiting on several rings at once. A goroutine that serves more than one
// ring (a connection's pump) shares one doorbell among them (RingSpec's
// DataBell and SpaceBell), arms each ring it wants to hear from, re-checks
// them all, parks on the shared doorbell with WaitUntil, and disarms when
// awake. Wait and WaitSpace do the same for a single ring.

// Ready reports whether a frame is published past what was read.
func (c *Consumer) Ready() bool { return c.tail != c.head || c.ready() }

// Arm releases what was read and announces that the consumer's goroutine
// is about to park: the producer rings the data doorbell at its next flush.
// Re-check Ready after arming and before parking; Disarm once awake.
func (c *Consumer) Arm() {
	c.Release()
	c.r.sleeping.Store(1)
}

// Rearm announces again that the consumer's goroutine parks, without
// releasing anything: a WaitUntil condition calls it before it looks at
// the ring, because the ring that woke the goroutine consumed the
// announcement, and a wake-up that finds nothing to do (another goroutine
// took the frames) must not leave the next frame unannounced. Any
// goroutine may call it; a needless announcement costs one ring.
func (c *Consumer) Rearm() { c.r.sleeping.Store(1) }

// Disarm withdraws Arm.
func (c *Consumer) Disarm() { c.r.sleeping.CompareAndSwap(1, 0) }

// Wake rings the data doorbell if the consumer is armed, as the producer
// would. It lets this process wake its own parked consumer for a reason
// outside the ring; any goroutine may call it.
func (c *Consumer) Wake() {
	if c.r.sleeping.Load() != 0 && c.r.sleeping.CompareAndSwap(1, 0) && c.o.data != nil {
		c.o.data.Ring()
	}
}

// Fits reports whether a frame with an n-byte body fits now. A ring that
// turned out corrupt reports true, so that the next write returns the error.
func (p *Producer) Fits(n int) bool {
	if p.err != nil {
		return true
	}
	pad, size := p.need(n)
	if p.fits(pad, size) {
		return true
	}
	if p.refreshTail() != nil {
		return true
	}
	return p.fits(pad, size)
}

// ArmSpace flushes and announces that the producer's goroutine is about to
// park until the consumer makes room: the consumer rings the space doorbell
// at its next release. Re-check Fits after arming; DisarmSpace once awake.
func (p *Producer) ArmSpace() {
	p.Flush()
	p.r.waiting.Store(1)
}

// RearmSpace is Rearm for ArmSpace: a WaitUntil condition calls it before
// it checks for room.
func (p *Producer) RearmSpace() { p.r.waiting.Store(1) }

// DisarmSpace withdraws ArmSpace.
func (p *Producer) DisarmSpace() { p.r.waiting.CompareAndSwap(1, 0) }

// Unreleased reports, from shared counters only, whether the producer has
// published frames this consumer has not released. Unlike Ready it reads
// no state private to the consumer's goroutine, so another goroutine may
// call it.
func (c *Consumer) Unreleased() bool { return c.r.head.Load() != c.r.tail.Load() }

// Fill returns the bytes published and not yet released by the consumer,
// as the shared counters say (clamped to the ring's size: the other side
// may lie). Unlike the rest of Producer, any goroutine may call it; it is
// a gauge for listings and metrics.
func (p *Producer) Fill() int {
	h, t := p.r.head.Load(), p.r.tail.Load()
	if t > h {
		return 0
	}
	return int(min(h-t, p.r.size))
}

// Fill is Producer.Fill seen from the consumer's side; any goroutine may
// call it.
func (c *Consumer) Fill() int {
	h, t := c.r.head.Load(), c.r.tail.Load()
	if t > h {
		return 0
	}
	return int(min(h-t, c.r.size))
}

// Capacity returns the size of the ring's data area.
func (c *Consumer) Capacity() int { return int(c.r.size) }

// Position returns the end of the frames this producer committed: a
// running byte count (it never wraps), comparable with Consumed. Like the
// rest of Producer, one goroutine at a time.
func (p *Producer) Position() uint64 { return p.head }

// CachedConsumed returns the consumer's position as this producer last
// read it (when it looked for room): at most Consumed, and, unlike
// Consumed, it touches no memory the consumer writes. Like the rest of
// Producer, one goroutine at a time.
func (p *Producer) CachedConsumed() uint64 { return p.tail }

// Consumed returns the consumer's position as the shared counters say:
// every frame that ends at or before it has been read and released. Any
// goroutine may call it while the ring is mapped.
func (p *Producer) Consumed() uint64 { return p.r.tail.Load() }

// Position returns the end of the frames this consumer has read (released
// or not), comparable with Published. Like the rest of Consumer, one
// goroutine at a time.
func (c *Consumer) Position() uint64 { return c.tail }

// Released returns the position this consumer last gave back (Release),
// as the shared counters say. Any goroutine may call it while the ring is
// mapped.
func (c *Consumer) Released() uint64 { return c.r.tail.Load() }

// Published returns the producer's position as the shared counters say:
// the end of the frames it has made visible. Any goroutine may call it
// while the ring is mapped. It comes from the other side: a consumer must
// not trust it beyond the checks Next makes.
func (c *Consumer) Published() uint64 { return c.r.head.Load() }
