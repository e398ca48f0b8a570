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
type bufPool struct {
	mu    sync.Mutex
	free  []*poolBuf
	nfree atomic.Int32 // len(free): a get finds an empty pool without the lock
}

// A poolBuf is a payload buffer of a bufPool.
type poolBuf struct {
	b    []byte
	gen  atomic.Uint64 // the current loan's number; bumped when it ends
	pool *bufPool
}

// tinyBuf and smallBuf are poolBufs whose bytes come with them: a small
// event's fresh buffer costs one allocation, as a bare copy would.
type tinyBuf struct {
	poolBuf
	bytes [tinyBufSize]byte
}

type smallBuf struct {
	poolBuf
	bytes [smallBufSize]byte
}

const (
	tinyBufSize  = 64
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
	switch {
	case pb != nil:
	case len(b) <= tinyBufSize:
		s := &tinyBuf{}
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
// the pool has room; a loan ends once.
func (pb *poolBuf) release(gen uint64) {
	if !pb.gen.CompareAndSwap(gen, gen+1) {
		return
	}
	p := pb.pool
	p.mu.Lock()
	if len(p.free) < poolKeep {
		p.free = append(p.free, pb)
		p.nfree.Store(int32(len(p.free)))
	}
	p.mu.Unlock()
}
