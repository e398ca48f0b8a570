package switchboard

import (
	"context"
	"net"
	"sync/atomic"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// AsyncCall is a call (Go) or a request to a peer (GoRequest) in flight:
// started at once, and completed by the connection itself (the goroutine
// that reads its replies), which sends the AsyncCall on Done. One goroutine
// can keep any number of them in flight, without a goroutine each
// (net/rpc's Client.Go).
type AsyncCall struct {
	Service, Command uint16 // Go's
	To               string // GoRequest's destination
	// Reply and Err are the result, as Call or Request would have
	// returned it; set before the AsyncCall is sent on Done, and not to be
	// read before it is received from there.
	Reply []byte
	Err   error
	// Done receives the AsyncCall once, when it completes.
	Done chan *AsyncCall

	id   uint64
	cl   call // its entry among the connection's pending calls
	stop func() bool
	done atomic.Bool // completed (the one send on Done happened or is on its way)
	c    *Conn
}

// Go starts a call to service and command and returns at once, the
// request written (or failed): its completion arrives on done. It is Call
// without the wait, with the same errors, ctx's deadline and cancellation:
// cancelling ctx abandons the call (a late reply is discarded), tells the
// node (the handler's context ends), and completes the call with ctx's
// error; a ctx that has already ended writes nothing and completes the
// call with its error at once. If the connection ends, every call in flight completes with its
// error (ErrClosed, ErrNodeGone, …). Every AsyncCall is sent on its done
// channel exactly once, even when it fails before anything was written.
//
// done may be shared by many calls and must be buffered: Go panics if it
// is not (a nil done gets a new channel of capacity 1). Size it for the
// calls in flight on it. A completion that finds it full is not dropped,
// nor does it hold up the connection's replies: it is handed over by a
// goroutine of its own, started for it and ended when it is received.
func (c *Conn) Go(ctx context.Context, service, command uint16, payload []byte, done chan *AsyncCall) *AsyncCall {
	return c.GoBuffers(ctx, service, command, net.Buffers{payload}, done)
}

// GoBuffers is Go with the payload gathered from parts (see CallBuffers).
func (c *Conn) GoBuffers(ctx context.Context, service, command uint16, parts net.Buffers, done chan *AsyncCall) *AsyncCall {
	a := newAsync(done)
	a.Service, a.Command = service, command
	c.startAsync(ctx, a, shm.Header{Kind: pb.KindCall, Service: service, Command: command}, nil, parts)
	return a
}

// GoRequest starts a request to a peer (an address or a well-known name)
// and returns at once: Request without the wait, its completion on done
// as for Go.
func (c *Conn) GoRequest(ctx context.Context, to string, payload []byte, done chan *AsyncCall) *AsyncCall {
	return c.GoRequestBuffers(ctx, to, net.Buffers{payload}, done)
}

// GoRequestBuffers is GoRequest with the payload gathered from parts.
func (c *Conn) GoRequestBuffers(ctx context.Context, to string, parts net.Buffers, done chan *AsyncCall) *AsyncCall {
	a := newAsync(done)
	a.To = to
	prefix, err := destPrefix(to)
	if err != nil {
		a.finish(nil, err)
		return a
	}
	c.startAsync(ctx, a, shm.Header{Kind: pb.KindPeerCall}, prefix, parts)
	return a
}

func newAsync(done chan *AsyncCall) *AsyncCall {
	if done == nil {
		done = make(chan *AsyncCall, 1)
	} else if cap(done) == 0 {
		panic("switchboard: the done channel of an asynchronous call is unbuffered")
	}
	return &AsyncCall{Done: done}
}

// startAsync writes a's request like a call's, then puts a in its place
// among the pending calls, so that the reply completes a. A reply (or the
// end of the connection) that came before the swap is taken as a call
// would take it.
func (c *Conn) startAsync(ctx context.Context, a *AsyncCall, h shm.Header, prefix []byte, parts [][]byte) {
	if err := ctx.Err(); err != nil { // nothing is written for a call already abandoned
		a.finish(nil, err)
		return
	}
	id, cl, err := c.startFrame(ctx, h, prefix, parts...)
	if err != nil {
		a.finish(nil, err)
		return
	}
	a.c, a.id, a.cl.async = c, id, a
	if ctx.Done() != nil { // no goroutine: a standard context runs it when it ends
		a.stop = context.AfterFunc(ctx, func() { a.canceled(ctx) })
	}
	if h := testHookAsyncSwap.Load(); h != nil {
		(*h)(c, id)
	}
	c.pmu.Lock()
	swapped := c.pending[id] == cl
	if swapped {
		c.pending[id] = &a.cl
	}
	c.pmu.Unlock()
	if swapped {
		callPool.Put(cl)
		return
	}
	// The reply (or the end of the connection, or ctx) came first: the
	// AfterFunc is not needed, and must not keep a (and its reply) until
	// ctx ends.
	if a.stop != nil {
		a.stop()
	}
	reply, err := c.finishCall(ctx, id, cl) // at once: its reply is there, or the connection ended, or ctx did
	a.finish(reply, err)
}

// testHookAsyncSwap, when set, runs in startAsync between the write of
// the request and the swap of its pending call (tests only).
var testHookAsyncSwap atomic.Pointer[func(*Conn, uint64)]

// canceled runs when a's context ends before its reply came. The caller
// learns it first; the Cancel frame (a socket write, which may wait up to
// 100 ms behind other frames) follows.
func (a *AsyncCall) canceled(ctx context.Context) {
	if a.c.forget(a.id) {
		a.finish(nil, ctx.Err())
		a.c.cancelCall(a.id)
	}
}

// replied completes a with its reply (the reply's reader calls it, after
// taking a from the pending calls).
func (a *AsyncCall) replied(payload []byte, code pb.Code) {
	if a.stop != nil {
		a.stop()
	}
	if code != pb.Code_CODE_OK {
		a.finish(nil, replyError(code, string(payload)))
		return
	}
	a.finish(payload, nil)
}

// finish sets a's result and sends it on Done, once.
func (a *AsyncCall) finish(reply []byte, err error) {
	if !a.done.CompareAndSwap(false, true) {
		return
	}
	a.Reply, a.Err = reply, err
	select {
	case a.Done <- a:
	default: // full: never dropped, never blocking the reader of replies
		go func() { a.Done <- a }()
	}
}

// failAsync completes the asynchronous calls among calls, taken from the
// pending calls when the connection ended, with err.
func failAsync(calls map[uint64]*call, err error) {
	for _, cl := range calls {
		if a := cl.async; a != nil {
			if a.stop != nil {
				a.stop()
			}
			a.finish(nil, err)
		}
	}
}
