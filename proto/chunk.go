package pb

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// WriteMessage writes a message whose body is the concatenation of parts
// (scatter-gather: nothing is joined) to p, as one frame, or, when it is
// larger than the ring's largest frame, as FlagMore chunks with h's kind
// and ID. It waits for room: ctx bounds the wait for the first frame, life
// (the connection's lifetime) the waits for the others, since a reader
// cannot tell an abandoned message from a slow one: a message once begun
// is finished, or its connection ends. Each frame is flushed
// at once, except that with batch a message of one frame is only appended
// when it fits now, for the producer's next Flush (a pump that flushes
// once per batch of work).
func WriteMessage(ctx, life context.Context, p *shm.Producer, h shm.Header, batch bool, parts ...[]byte) error {
	max, total := p.MaxBody(), 0
	for _, b := range parts {
		total += len(b)
	}
	h.Flags &^= FlagMore
	if total <= max {
		if batch {
			if err := p.Append(h, parts...); err != shm.ErrRingFull {
				return err
			}
		}
		return p.Write(ctx, h, parts...)
	}
	var chunk [4][]byte // the pieces of parts one frame spans
	wctx := ctx         // the first frame's wait; life bounds the others'
	i, off := 0, 0      // where the next frame starts: parts[i][off:]
	for total > 0 {
		n := min(max, total)
		total -= n
		cs := chunk[:0]
		for n > 0 {
			take := min(n, len(parts[i])-off)
			if take > 0 {
				cs = append(cs, parts[i][off:off+take])
			}
			off += take
			n -= take
			if off == len(parts[i]) {
				i, off = i+1, 0
			}
		}
		if total > 0 {
			h.Flags |= FlagMore
		} else {
			h.Flags &^= FlagMore
		}
		if err := p.Write(wctx, h, cs...); err != nil {
			return err
		}
		wctx = life
	}
	return nil
}

// Message is a whole message: one frame, or the chunks of one put back
// together.
type Message struct {
	shm.Header        // the first frame's, without FlagMore
	Body       []byte // a view of the ring for a single frame; else owned
	Owned      bool   // Body was reassembled and may be kept
	Since      time.Time
}

// Reassembly puts messages sent in FlagMore chunks back together, keyed
// by frame ID (the chunks of one message share it). Set MaxSize before
// use: the zero value refuses every chunked message. It is not safe for
// concurrent use.
type Reassembly struct {
	MaxInFlight int // chunked messages in flight at once (0: 64)
	MaxSize     int // largest reassembled body (0: none is taken)
	parts       map[uint64]*Message
}

// Errors of Reassembly.Add: the sender broke the protocol.
var (
	ErrChunksInFlight = errors.New("too many chunked messages in flight")
	ErrChunkedTooBig  = errors.New("chunked message exceeds the limit or changes kind")
)

// Add takes one frame. It returns the message and true when the frame
// completes one (a frame without FlagMore and no chunks before it is a
// message by itself, its Body a view of the frame's), or false while
// chunks of the message are still to come. Since is when the message's
// first chunk arrived (zero for a message of one frame).
func (r *Reassembly) Add(f shm.Frame) (Message, bool, error) {
	p := r.parts[f.ID]
	if p == nil && f.Flags&FlagMore == 0 {
		return Message{Header: f.Header, Body: f.Body}, true, nil
	}
	if p == nil {
		if len(r.parts) >= cmp0(r.MaxInFlight, 64) {
			return Message{}, false, ErrChunksInFlight
		}
		if r.parts == nil {
			r.parts = map[uint64]*Message{}
		}
		p = &Message{Header: f.Header, Owned: true, Since: time.Now()}
		p.Flags &^= FlagMore
		r.parts[f.ID] = p
	}
	if p.Kind != f.Kind || len(p.Body)+len(f.Body) > r.MaxSize {
		delete(r.parts, f.ID)
		return Message{}, false, ErrChunkedTooBig
	}
	p.Body = append(p.Body, f.Body...)
	if f.Flags&FlagMore != 0 {
		return Message{}, false, nil
	}
	delete(r.parts, f.ID)
	return *p, true, nil
}

// Whole reports whether f is a whole message by itself, one that Add
// would return as it is: it has no FlagMore and no message is being put
// together. A reader's hot path asks it first, and calls Add only when it
// is false.
func (r *Reassembly) Whole(f shm.Frame) bool { return f.Flags&FlagMore == 0 && len(r.parts) == 0 }

// Pending reports whether chunks of message id have arrived and its last
// has not.
func (r *Reassembly) Pending(id uint64) bool {
	_, ok := r.parts[id]
	return ok
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
