package switchboard

import "sync"

// viewPool keeps a few large buffers for the copies of CallView replies
// that the pump delivered (the caller had stopped reading the response
// ring itself): Reply.Release gives its copy back, the next such reply
// reuses it. A Reply gives its buffer back once (Release forgets it).
type viewPool struct {
	mu   sync.Mutex
	free [][]byte
}

const (
	viewPoolMin  = 4 << 10 // smaller replies are cheap to allocate
	viewPoolKeep = 16      // buffers kept at most
)

// get returns a buffer holding a copy of b: a pooled one if it fits.
func (p *viewPool) get(b []byte) []byte {
	if len(b) >= viewPoolMin {
		p.mu.Lock()
		if n := len(p.free); n > 0 && cap(p.free[n-1]) >= len(b) {
			buf := p.free[n-1]
			p.free = p.free[:n-1]
			p.mu.Unlock()
			return append(buf[:0], b...)
		}
		p.mu.Unlock()
	}
	return append([]byte(nil), b...)
}

// put keeps b for a later get, if it is large enough and there is room.
func (p *viewPool) put(b []byte) {
	if cap(b) < viewPoolMin {
		return
	}
	p.mu.Lock()
	if len(p.free) < viewPoolKeep {
		p.free = append(p.free, b[:0])
	}
	p.mu.Unlock()
}
