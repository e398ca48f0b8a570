package switchboard

import (
	"context"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

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
// call with its error at once. If the connection ends, every call in
// flight completes with its error (ErrClosed, ErrNodeGone, …). Every
// AsyncCall is sent on its done channel exactly once, even when it fails
// before anything was written.
//
// done may be shared by many calls and must be buffered: Go panics if it
// is not (a nil done gets a new channel of capacity 1). Size it for the
// calls in flight on it. A completion that finds it full does not hold up
// the connection's replies: it waits in a queue of the Conn, which one
// goroutine of the Conn hands over, in order for each channel, as room
// comes; the goroutine ends when the queue is empty. After the connection
// has ended (Close, the node gone), completions still queued wait for a
// taker for AsyncGrace at most (from the end, then from the last one
// taken), and are then given up and counted, FlowControl.AsyncUndelivered:
// an application that stops reading after Close leaks nothing.
//
// As with net/rpc, done must not be closed while calls on it are in
// flight: a completion that finds it closed is not sent (it cannot be),
// and is counted in FlowControl.AsyncUndelivered; the connection goes on.
func (c *Conn) Go(ctx context.Context, service, command uint16, payload []byte, done chan *AsyncCall) *AsyncCall {
	return c.GoBuffers(ctx, service, command, net.Buffers{payload}, done)
}

// GoBuffers is Go with the payload gathered from parts (see CallBuffers).
func (c *Conn) GoBuffers(ctx context.Context, service, command uint16, parts net.Buffers, done chan *AsyncCall) *AsyncCall {
	a := newAsync(c, done)
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
	a := newAsync(c, done)
	a.To = to
	prefix, err := c.destPrefix(to)
	if err != nil {
		a.finish(nil, err)
		return a
	}
	c.directRouted(to) // in order with what went over a channel to it (client_direct.go)
	c.startAsync(ctx, a, shm.Header{Kind: pb.KindPeerCall}, prefix, parts)
	return a
}

func newAsync(c *Conn, done chan *AsyncCall) *AsyncCall {
	if done == nil {
		done = make(chan *AsyncCall, 1)
	} else if cap(done) == 0 {
		panic("switchboard: the done channel of an asynchronous call is unbuffered")
	}
	return &AsyncCall{Done: done, c: c}
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
	a.id, a.cl.async = id, a
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

// finish sets a's result and sends it on Done, once: at once if there is
// room and no completion waits in the Conn's queue before it, else through
// the queue.
func (a *AsyncCall) finish(reply []byte, err error) {
	if !a.done.CompareAndSwap(false, true) {
		return
	}
	a.Reply, a.Err = reply, err
	o := &a.c.overflow
	if o.n.Load() == 0 {
		switch sendAsync(a.Done, a) {
		case sent:
			return
		case closedChan:
			o.undelivered.Add(1)
			return
		}
	}
	a.c.queueAsync(a)
}

// AsyncGrace is how long, once a connection has ended, the completions
// that found their done channels full wait for a taker (from the end, then
// from the last one taken) before they are given up (see Conn.Go).
var AsyncGrace = 5 * time.Second

// asyncOverflow holds a Conn's completions that found their done channel
// full, and runs the one goroutine that hands them over (deliverAsync).
type asyncOverflow struct {
	n           atomic.Int64 // completions queued; finish skips the queue while 0
	undelivered atomic.Uint64
	mu          sync.Mutex
	queues      map[chan *AsyncCall][]*AsyncCall // under mu, in completion order
	running     bool                             // under mu: deliverAsync runs
	wake        chan struct{}                    // a token: a channel deliverAsync does not wait on yet
}

type sendResult int

const (
	full sendResult = iota
	sent
	closedChan
)

// sendAsync sends a on done if there is room, without blocking and
// without panicking if done was closed.
func sendAsync(done chan *AsyncCall, a *AsyncCall) (r sendResult) {
	defer func() {
		if recover() != nil { // send on a closed channel
			r = closedChan
		}
	}()
	select {
	case done <- a:
		return sent
	default:
		return full
	}
}

// queueAsync queues a for its done channel, starting the delivering
// goroutine if it does not run.
func (c *Conn) queueAsync(a *AsyncCall) {
	o := &c.overflow
	o.mu.Lock()
	if o.queues == nil {
		o.queues = map[chan *AsyncCall][]*AsyncCall{}
		o.wake = make(chan struct{}, 1)
	}
	_, known := o.queues[a.Done]
	o.queues[a.Done] = append(o.queues[a.Done], a)
	o.n.Add(1)
	start := !o.running
	o.running = true
	o.mu.Unlock()
	switch {
	case start:
		go c.deliverAsync()
	case !known:
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
}

// deliverAsync hands the queued completions over, the first of each
// channel's queue at a time, as their channels have room. It ends when the
// queue is empty, or, once the connection has ended, when nothing was
// taken for AsyncGrace: what is left is then counted undelivered.
func (c *Conn) deliverAsync() {
	o := &c.overflow
	var grace *time.Timer
	gone := reflect.ValueOf(c.gone)
	var cases []reflect.SelectCase
	var chans []chan *AsyncCall
	for {
		o.mu.Lock()
		if len(o.queues) == 0 {
			o.running = false
			o.mu.Unlock()
			if grace != nil {
				grace.Stop()
			}
			return
		}
		cases = append(cases[:0],
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(o.wake)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: gone},
			reflect.SelectCase{Dir: reflect.SelectRecv})
		if grace != nil {
			cases[2].Chan = reflect.ValueOf(grace.C)
		}
		chans = chans[:0]
		for ch, q := range o.queues {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(ch), Send: reflect.ValueOf(q[0])})
			chans = append(chans, ch)
		}
		o.mu.Unlock()
		i, ok := selectAsync(cases)
		switch {
		case !ok: // a channel was closed: find it, give up its completions
			for j, ch := range chans {
				switch sendAsync(ch, cases[j+3].Send.Interface().(*AsyncCall)) {
				case closedChan:
					o.drop(ch)
				case sent:
					o.pop(ch)
				}
			}
		case i == 0: // a new channel
		case i == 1: // the connection ended: the grace starts
			gone = reflect.Value{}
			grace = time.NewTimer(AsyncGrace)
		case i == 2: // nobody took anything for AsyncGrace
			o.mu.Lock()
			for ch := range o.queues {
				o.dropLocked(ch)
			}
			o.mu.Unlock()
		default:
			o.pop(chans[i-3])
			if grace != nil {
				grace.Reset(AsyncGrace)
			}
		}
	}
}

// selectAsync is reflect.Select, with false for a send on a closed channel.
func selectAsync(cases []reflect.SelectCase) (i int, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	i, _, _ = reflect.Select(cases)
	return i, true
}

// pop removes the first completion queued for ch, which was sent.
func (o *asyncOverflow) pop(ch chan *AsyncCall) {
	o.mu.Lock()
	if q := o.queues[ch]; len(q) > 1 {
		q[0] = nil
		o.queues[ch] = q[1:]
	} else {
		delete(o.queues, ch)
	}
	o.n.Add(-1)
	o.mu.Unlock()
}

// drop gives up the completions queued for ch, counting them.
func (o *asyncOverflow) drop(ch chan *AsyncCall) {
	o.mu.Lock()
	o.dropLocked(ch)
	o.mu.Unlock()
}

func (o *asyncOverflow) dropLocked(ch chan *AsyncCall) {
	n := len(o.queues[ch])
	delete(o.queues, ch)
	o.n.Add(-int64(n))
	o.undelivered.Add(uint64(n))
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
