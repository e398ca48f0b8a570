package shm

import (
	"sync"
	"sync/atomic"
)

// LinkPool keeps a few links of one geometry made ahead, so that whoever
// needs one (the node, accepting a connection) does not wait for the
// memfd to be created, sized, sealed and mapped, its header written, its
// control pages faulted in and its doorbells made: a goroutine the pool
// owns makes them in the background, between requests.
//
// A link from the pool has never been given to anyone: Get takes it out
// for good and nothing ever puts a link back. A segment once shared with
// a peer must not be shared with another, since the first may keep its
// mapping after it leaves and write into the rings of the next.
type LinkPool struct {
	name  string
	rings []RingSpec
	opts  []Option

	spares chan *Link    // made and never given out; only the filler sends
	want   chan struct{} // a token: a spare was taken, make another
	stop   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex // started, closed
	started bool
	closed  bool

	guard sync.Locker // held while a link is made; set by Guard before the first Get

	made, taken, missed atomic.Uint64
	failed              atomic.Uint64
}

// NewLinkPool returns a pool that keeps up to spares links made with
// NewLink(name, rings, opts...) ahead. It makes none until the first Get:
// a pool nobody takes from costs nothing.
func NewLinkPool(name string, rings []RingSpec, spares int, opts ...Option) *LinkPool {
	return &LinkPool{
		name:   name,
		rings:  append([]RingSpec(nil), rings...),
		opts:   append([]Option(nil), opts...),
		spares: make(chan *Link, max(spares, 1)),
		want:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
}

// Guard makes the pool hold l while it makes a link (its descriptors
// come into being under l), both in the background and in Get. A process
// that gives up a spare descriptor to accept a connection when it runs out
// holds the same lock, so that no link takes the slot between the close
// and the accept. Call it before the first Get.
func (p *LinkPool) Guard(l sync.Locker) { p.guard = l }

// make makes one link, under the guard if there is one.
func (p *LinkPool) make() (*Link, error) {
	if p.guard != nil {
		p.guard.Lock()
		defer p.guard.Unlock()
	}
	return NewLink(p.name, p.rings, p.opts...)
}

// Get returns a link that nobody else has ever had: a spare if one is
// ready (and asks the pool for another), else one made now.
func (p *LinkPool) Get() (*Link, error) {
	select {
	case l := <-p.spares:
		p.taken.Add(1)
		p.refill()
		return l, nil
	default:
	}
	p.missed.Add(1)
	p.refill()
	return p.make()
}

// refill wakes the filler, starting it the first time, unless the pool
// is closed.
func (p *LinkPool) refill() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if !p.started {
		p.started = true
		p.wg.Go(p.fill)
	}
	p.mu.Unlock()
	select {
	case p.want <- struct{}{}:
	default: // the filler has a token already
	}
}

// fill makes spares until the pool is full, then waits for a Get to take
// one. A failure (out of descriptors, say) stops it until the next Get,
// which makes its link itself and so meets the failure where it can be
// answered.
func (p *LinkPool) fill() {
	for {
		select {
		case <-p.stop:
			return
		case <-p.want:
		}
		for len(p.spares) < cap(p.spares) {
			l, err := p.make()
			if err != nil {
				p.failed.Add(1)
				break
			}
			p.made.Add(1)
			select {
			case <-p.stop:
				l.Close()
				return
			default:
			}
			p.spares <- l // never blocks: only fill sends, and there was room
		}
	}
}

// Close stops the filler, waits for it and closes the spares. Get still
// works afterwards, making each link as it is asked for. Close is
// idempotent.
func (p *LinkPool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait()
	for {
		select {
		case l := <-p.spares:
			l.Close()
		default:
			return
		}
	}
}

// PoolStats counts what a LinkPool did.
type PoolStats struct {
	Made   uint64 // spares made ahead
	Taken  uint64 // Gets served by a spare
	Missed uint64 // Gets that found no spare and made their link themselves
	Failed uint64 // spares the filler failed to make
	Spares int    // spares ready now
}

// Stats returns the pool's counters.
func (p *LinkPool) Stats() PoolStats {
	return PoolStats{Made: p.made.Load(), Taken: p.taken.Load(), Missed: p.missed.Load(),
		Failed: p.failed.Load(), Spares: len(p.spares)}
}
