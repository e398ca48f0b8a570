package switchboard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"sync"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

type call struct {
	done    chan struct{}
	payload []byte
	code    pb.Code
	async   *AsyncCall // Go, GoRequest: the reply completes it instead (client_async.go)
	view    bool       // CallView: a copy of the reply may be a pooled buffer (viewbufs)
	parked  time.Time  // when its caller's spin (lead) gave up; zero if it did not spin or won (cleared when taken from the pool)
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Call sends a request to service and command and waits for the reply.
// ctx's deadline travels to the handler; cancelling ctx abandons the call
// (a late reply is discarded) and tells the node. If the node goes away
// the call fails with ErrNodeGone at once.
func (c *Conn) Call(ctx context.Context, service, command uint16, payload []byte) ([]byte, error) {
	return c.CallBuffers(ctx, service, command, net.Buffers{payload})
}

// startCall registers a call and writes its request, gathered from
// payload's parts.
func (c *Conn) startCall(ctx context.Context, service, command uint16, payload ...[]byte) (uint64, *call, error) {
	return c.startFrame(ctx, shm.Header{Kind: pb.KindCall, Service: service, Command: command}, nil, payload...)
}

// startFrame registers a call and writes its frame: h with its ID and
// deadline filled in, and a body of prefix then payload's parts.
func (c *Conn) startFrame(ctx context.Context, h shm.Header, prefix []byte, payload ...[]byte) (uint64, *call, error) {
	return c.startFrameView(ctx, h, prefix, false, payload...)
}

// startFrameView is startFrame, for CallView when view is set.
func (c *Conn) startFrameView(ctx context.Context, h shm.Header, prefix []byte, view bool, payload ...[]byte) (uint64, *call, error) {
	if n := partsLen(payload); n > c.maxMsg { // a prefix (a destination) is the protocol's, not the user's
		return 0, nil, codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", n, c.maxMsg))
	}
	if dl, ok := ctx.Deadline(); ok {
		us := time.Until(dl).Microseconds()
		if us <= 0 {
			return 0, nil, context.DeadlineExceeded
		}
		h.Aux = uint32(min(us, math.MaxUint32))
	}
	id := c.nextID.Add(1)
	h.ID = id
	cl := callPool.Get().(*call)
	cl.view = view // before the reply can find it
	cl.parked = time.Time{}
	c.pmu.Lock()
	if err := c.goneErr; err != nil {
		c.pmu.Unlock()
		callPool.Put(cl)
		if err := c.awaitBack(ctx, err); err != nil {
			return 0, nil, err
		}
		return c.startFrameView(ctx, h, prefix, view, payload...) // back after a gap (WaitForReconnect)
	}
	c.pending[id] = cl
	c.pmu.Unlock()
	var buf [8][]byte
	if err := c.writeParts(ctx, h, gather(&buf, prefix, payload)...); err != nil {
		if c.forget(id) {
			callPool.Put(cl)
		}
		return 0, nil, err
	}
	return id, cl, nil
}

// finishCall waits for a call's reply.
func (c *Conn) finishCall(ctx context.Context, id uint64, cl *call) ([]byte, error) {
again:
	// With WithInlineRequests, an inline handler may hold the pump: while
	// it runs, callers read the replies themselves every 50 µs; otherwise
	// they wait to hear that one started.
	var started <-chan struct{}
	var poll <-chan time.Time
	if c.o.inline {
		started = *c.inlineStarted.Load()
		if c.inHandler.Load() {
			started, poll = nil, time.After(50*time.Microsecond)
		}
	}
	select {
	case <-started:
		goto again
	case <-poll:
		var err error
		if c.mapMu.TryRLock() { // fails only while Close unmaps
			if !c.closing.Load() && c.rmu.TryLock() {
				err = c.readResponses()
				c.rmu.Unlock()
			}
			c.mapMu.RUnlock()
		}
		if err != nil {
			c.end(err)
		}
		goto again
	case <-cl.done:
		if !cl.parked.IsZero() {
			c.leadWoke(time.Since(cl.parked))
		}
		return callResult(cl)
	case <-ctx.Done():
		if c.forget(id) {
			callPool.Put(cl)
			c.cancelCall(id)
		}
		return nil, ctx.Err()
	case <-c.gone:
		c.forget(id)
		return nil, c.err()
	}
}

// callResult is the result of a call whose reply came (taken from
// cl.done); cl goes back to the pool.
func callResult(cl *call) ([]byte, error) {
	payload, code := cl.payload, cl.code
	cl.payload = nil
	callPool.Put(cl)
	if code != pb.Code_CODE_OK {
		return nil, replyError(code, string(payload))
	}
	return payload, nil
}

// lead spins for a while reading the response ring itself, so that a reply
// that comes quickly reaches its caller without a wake-up of the pump and
// a goroutine switch. One caller at a time spins; the others block. The
// spin adapts to how late the replies that outlast it come
// (shm.NewReplySpinner; finishCall reports the wait: leadWoke): replies
// that keep coming long after it (a peer on another node, a slow handler)
// shrink it to a microsecond, so that such calls do not burn a CPU the
// node needs; one that comes soon after it gave up, or a spin that wins,
// grows it again.
func (c *Conn) lead(cl *call) {
	if c.spin <= 0 || !c.spinning.CompareAndSwap(false, true) {
		return
	}
	defer c.spinning.Store(false)
	var err error
	ready := func() bool {
		if len(cl.done) > 0 {
			return true
		}
		// Unreleased looks at the ring without rmu: under mapMu, which
		// Close takes before it unmaps. Only tried: the caller may hold a
		// viewed event or reply (evmu, rmu), which Close waits for.
		if !c.mapMu.TryRLock() {
			return true
		}
		if c.closing.Load() {
			c.mapMu.RUnlock()
			return true
		}
		if c.resp.Unreleased() && c.rmu.TryLock() {
			err = c.readResponses()
			c.rmu.Unlock()
		}
		c.mapMu.RUnlock()
		if err != nil {
			return true
		}
		return len(cl.done) > 0
	}
	if !c.leadSpin.Spin(ready) {
		cl.parked = time.Now()
	}
	if err != nil {
		c.end(err)
	}
}

// leadWoke tells the lead's spinner how long a caller whose spin gave up
// waited for its reply, if no caller is spinning now (the spinner is the
// spinning caller's).
func (c *Conn) leadWoke(waited time.Duration) {
	if c.spinning.CompareAndSwap(false, true) {
		c.leadSpin.Woke(waited)
		c.spinning.Store(false)
	}
}

// forget removes a pending call; false means a reply is being delivered.
func (c *Conn) forget(id uint64) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if _, ok := c.pending[id]; !ok {
		return false
	}
	delete(c.pending, id)
	return true
}

// cancelCall tells the node to cancel call id's context (best effort).
func (c *Conn) cancelCall(id uint64) {
	if c.directCancel(id) { // it went over a direct channel (client_direct.go)
		return
	}
	if c.closing.Load() { // the node cancels everything itself
		return
	}
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	c.sock.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	pb.WriteControl(c.sock, &pb.Control{Msg: &pb.Control_Cancel{Cancel: &pb.Cancel{Id: id}}}, nil)
	c.sock.SetWriteDeadline(time.Time{})
}

// Send sends a request without waiting for, or getting, a reply.
func (c *Conn) Send(ctx context.Context, service, command uint16, payload []byte) error {
	return c.send(ctx, service, command, net.Buffers{payload})
}

// send is Send with the payload gathered from parts.
func (c *Conn) send(ctx context.Context, service, command uint16, parts [][]byte) error {
	if n := partsLen(parts); n > c.maxMsg {
		return codeError(pb.Code_CODE_TOO_LARGE, fmt.Sprintf("%d bytes, limit %d", n, c.maxMsg))
	}
	if err := c.err(); err != nil {
		if err := c.awaitBack(ctx, err); err != nil {
			return err
		}
		return c.send(ctx, service, command, parts)
	}
	return c.writeParts(ctx, shm.Header{Kind: pb.KindSend, Service: service, Command: command, ID: c.nextID.Add(1)}, parts...)
}

// writeParts writes a frame whose body is parts, gathered (never joined).
func (c *Conn) writeParts(ctx context.Context, h shm.Header, parts ...[]byte) error {
	if err := c.lockW(ctx); err != nil {
		return err
	}
	defer c.wmu.Unlock()
	if c.closed || c.flush.stopped.Load() { // Close began: what it flushes is settled
		return ErrClosed
	}
	err := pb.WriteMessage(ctx, c.life, c.req, h, false, parts...)
	if errors.Is(err, shm.ErrClosed) {
		return c.err()
	}
	if err == nil {
		c.noteSent(h) // for Flush and Close
	}
	return err
}

// lockW takes wmu, or gives up when ctx ends: a writer holding it may wait
// for room in the ring (with a context of its own, maybe none) while the
// node does not read, and another writer's context must still end its
// wait (a Flush's, a Call's deadline). Uncontended, it is one TryLock;
// contended, it yields a few times (a writer between frames holds wmu
// for a moment), then looks every 20 us to 1 ms.
func (c *Conn) lockW(ctx context.Context) error {
	if c.wmu.TryLock() {
		return nil
	}
	done := ctx.Done()
	if done == nil {
		c.wmu.Lock()
		return nil
	}
	for range 8 {
		runtime.Gosched()
		if c.wmu.TryLock() {
			return nil
		}
	}
	t := time.NewTimer(20 * time.Microsecond)
	defer t.Stop()
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, time.Millisecond) {
		select {
		case <-done:
			return ctx.Err()
		case <-t.C:
		}
		if c.wmu.TryLock() {
			return nil
		}
		t.Reset(wait)
	}
}

// readResponses delivers the replies waiting in the response ring. The
// caller holds rmu.
func (c *Conn) readResponses() error {
	defer c.resp.Release()
	for range 64 {
		f, err := c.resp.Next()
		if err == shm.ErrRingEmpty {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: response ring: %w", ErrProtocol, err)
		}
		if err := c.deliverReply(f); err != nil {
			return err
		}
	}
	return nil
}

// deliverReply hands a reply frame (a copy of it) to its caller. The
// caller of deliverReply holds rmu.
func (c *Conn) deliverReply(f shm.Frame) error {
	if f.Kind != pb.KindReply {
		return fmt.Errorf("%w: frame kind %d on the response ring", ErrProtocol, f.Kind)
	}
	if !c.replies.Whole(f) {
		m, whole, err := c.replies.Add(f)
		if err != nil {
			return fmt.Errorf("%w: reply: %w", ErrProtocol, err)
		}
		if whole {
			body := m.Body
			if !m.Owned { // a whole frame while another reply comes in chunks
				body = append([]byte(nil), body...)
			}
			c.reply(m.ID, pb.Code(m.Aux), body)
		}
		return nil
	}
	c.replyCopy(f.ID, pb.Code(f.Aux), f.Body)
	return nil
}

func (c *Conn) reply(id uint64, code pb.Code, payload []byte) {
	if cl := c.take(id); cl != nil {
		c.complete(cl, code, payload)
	}
}

// take removes call id from the pending calls and returns it, or counts
// a late reply if its caller gave up.
func (c *Conn) take(id uint64) *call {
	c.pmu.Lock()
	cl := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if cl == nil {
		c.late.Add(1) // the caller gave up
	}
	return cl
}

// replyCopy is reply with a copy of body, a view of the response ring: a
// pooled buffer for a CallView caller, which gives it back at Release.
func (c *Conn) replyCopy(id uint64, code pb.Code, body []byte) {
	cl := c.take(id)
	if cl == nil {
		return
	}
	if cl.view && code == pb.Code_CODE_OK {
		c.complete(cl, code, c.viewbufs.get(body))
		return
	}
	c.complete(cl, code, append([]byte(nil), body...))
}

func (c *Conn) complete(cl *call, code pb.Code, payload []byte) {
	if cl.async != nil {
		cl.async.replied(payload, code)
		return
	}
	cl.payload, cl.code = payload, code
	cl.done <- struct{}{}
}

// Reply is the result of CallView.
type Reply struct {
	// Body is the reply's payload. When the caller found its reply in the
	// response ring itself, Body is a view of shared memory: valid until
	// Release, untrusted, and holding up every other reply of the
	// connection until then. Otherwise it is a copy, which Release may
	// reuse for a later reply: in both cases Body is valid until Release.
	Body []byte
	c    *Conn
	pool *viewPool // a copy's pool (client_viewpool.go)
}

// Release gives the reply's memory back. Call it once, as soon as possible.
func (r *Reply) Release() {
	if r.c != nil {
		r.c.resp.Release()
		r.c.rmu.Unlock()
		r.c = nil
	}
	if r.pool != nil {
		r.pool.put(r.Body)
		r.pool = nil
	}
	r.Body = nil
}

// CallView is Call with the reply read in place (coroipc's
// reply_receive_in_buf): when the reply comes while the caller is still
// spinning for it, the caller gets a view of the response ring instead of
// a copy, and must Release it, before Close too. Errors are as for Call.
func (c *Conn) CallView(ctx context.Context, service, command uint16, payload []byte) (*Reply, error) {
	id, cl, err := c.startFrameView(ctx, shm.Header{Kind: pb.KindCall, Service: service, Command: command}, nil, true, payload)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for i := 1; len(cl.done) == 0; i++ {
		if c.rmu.TryLock() {
			if c.closing.Load() {
				c.rmu.Unlock()
				break
			}
			f, found, err := c.findReply(id)
			if err != nil {
				c.resp.Release()
				c.rmu.Unlock()
				c.end(err)
				break
			}
			if found && c.forget(id) {
				callPool.Put(cl)
				if code := pb.Code(f.Aux); code != pb.Code_CODE_OK {
					text := string(f.Body)
					c.resp.Release()
					c.rmu.Unlock()
					return nil, replyError(code, text)
				}
				return &Reply{Body: f.Body, c: c}, nil
			}
			c.resp.Release()
			c.rmu.Unlock()
		}
		if shm.SpinsOff() || i%64 == 0 && time.Since(start) > c.spin {
			break
		}
	}
	body, err := c.finishCall(ctx, id, cl)
	if err != nil {
		return nil, err
	}
	return &Reply{Body: body, pool: &c.viewbufs}, nil
}

// findReply reads the response ring up to the single-frame reply to call
// id, delivering the others, and returns it without releasing it. The
// caller holds rmu and releases the ring.
func (c *Conn) findReply(id uint64) (shm.Frame, bool, error) {
	for {
		f, err := c.resp.Next()
		if err == shm.ErrRingEmpty {
			return shm.Frame{}, false, nil
		}
		if err != nil {
			return shm.Frame{}, false, fmt.Errorf("%w: response ring: %w", ErrProtocol, err)
		}
		if f.Kind == pb.KindReply && f.ID == id && f.Flags&pb.FlagMore == 0 {
			if !c.replies.Pending(id) {
				return f, true, nil
			}
		}
		if err := c.deliverReply(f); err != nil {
			return shm.Frame{}, false, err
		}
	}
}
