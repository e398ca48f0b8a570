package switchboard

import (
	"sync"
	"sync/atomic"
)

// bufPool keeps a few payload buffers given back by Release, for the
// copies of later events. A buffer is lent to one event at a time; each
// loan has a number (poolBuf.gen), and Release gives the buffer back only
// for the loan its event was made with: a second Release of an event, or
// of a copy of it, finds the number moved on and does nothing, even if
// the buffer was lent again meanwhile.
//
// Until a Release shows that the receiver gives buffers back (wanted), a
// copy that finds no buffer is a bare one, of the payload's size, as if
// there were no pool: an event handler that keeps its events, or never
// releases them, pays for no pool buffer's header and rounding (a 100-byte
// group message took a 320-byte smallBuf, and the subscriber collected
// garbage 2.5 times as often as with bare copies). Its event's buf is
// the pool's bare marker, whose Release sets wanted.
type bufPool struct {
	mu     sync.Mutex
	free   []*poolBuf
	nfree  atomic.Int32 // len(free): a get finds an empty pool without the lock
	wanted atomic.Bool  // a Release came: copies that find no buffer get a pool buffer
	bare   poolBuf      // the buf of bare copies (pool set on first use)
}

// A poolBuf is a payload buffer of a bufPool.
type poolBuf struct {
	b    []byte
	gen  atomic.Uint64 // the current loan's number; bumped when it ends
	pool *bufPool
}

// tinyBuf, midBuf and smallBuf are poolBufs whose bytes come with them: a
// small event's fresh buffer costs one allocation, as a bare copy would.
// Their sizes fill the runtime's size classes (a poolBuf is 40 bytes:
// 112 and 176 bytes; smallBuf 296 of 320).
type tinyBuf struct {
	poolBuf
	bytes [tinyBufSize]byte
}

type midBuf struct {
	poolBuf
	bytes [midBufSize]byte
}

type smallBuf struct {
	poolBuf
	bytes [smallBufSize]byte
}

const (
	tinyBufSize  = 72
	midBufSize   = 136
	smallBufSize = 256 // small payloads share one allocation with their poolBuf
	poolKeep     = 64  // buffers kept at most
	poolLook     = 4   // buffers looked at, the last given back first, for one that fits
)

// get returns a copy of b in a buffer of the pool (one of the last given
// back if it fits, else a fresh one), the buffer, and its loan's number.
func (p *bufPool) get(b []byte) ([]byte, *poolBuf, uint64) {
	var pb *poolBuf
	if p.nfree.Load() > 0 {
		p.mu.Lock()
		for i := len(p.free) - 1; i >= 0 && i >= len(p.free)-poolLook; i-- {
			if cap(p.free[i].b) >= len(b) {
				last := len(p.free) - 1
				pb = p.free[i]
				p.free[i], p.free[last] = p.free[last], nil
				p.free = p.free[:last]
				p.nfree.Store(int32(last))
				break
			}
		}
		p.mu.Unlock()
	}
	if pb == nil && !p.wanted.Load() {
		if p.bare.pool == nil { // once: read by the Release of any event handed out since
			p.bare.pool = p
		}
		return append([]byte(nil), b...), &p.bare, 0
	}
	switch {
	case pb != nil:
	case len(b) <= tinyBufSize:
		s := &tinyBuf{}
		s.b, s.pool = s.bytes[:0], p
		pb = &s.poolBuf
	case len(b) <= midBufSize:
		s := &midBuf{}
		s.b, s.pool = s.bytes[:0], p
		pb = &s.poolBuf
	case len(b) <= smallBufSize:
		s := &smallBuf{}
		s.b, s.pool = s.bytes[:0], p
		pb = &s.poolBuf
	default:
		pb = &poolBuf{b: make([]byte, 0, len(b)), pool: p}
	}
	pb.b = append(pb.b[:0], b...)
	return pb.b, pb, pb.gen.Load()
}

// release ends loan gen of the buffer and keeps the buffer for reuse, if
// the pool has room; a loan ends once. A bare copy's release only tells
// the pool that buffers come back.
func (pb *poolBuf) release(gen uint64) {
	p := pb.pool
	if pb == &p.bare {
		if !p.wanted.Load() {
			p.wanted.Store(true)
		}
		return
	}
	if !pb.gen.CompareAndSwap(gen, gen+1) {
		return
	}
	p.mu.Lock()
	if len(p.free) < poolKeep {
		p.free = append(p.free, pb)
		p.nfree.Store(int32(len(p.free)))
	}
	p.mu.Unlock()
}
