package switchboard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"golang.org/x/sys/unix"
)

// The end of a connection, as every way of using it learns it: Done and
// Err; WithDisconnectHandler's f; the event actor's *Disconnected;
// Fd readable and TryRecvEvent false with Err set; RecvEvent's error. And
// the start: Dial's ErrNodeNotReady, and WithWaitForNode.

// WithDisconnectHandler calls f once when the connection ends, for any reason
// (Close included), with Err's value. f runs on a goroutine of the
// connection's own, after the last event given to WithEventHandler's
// handler, if any, has returned, and is the last thing the connection
// calls. f may call Close, and Dial again: Close waits for f unless f had
// already begun when Close was called.
//
// It is the event handler's news of the end (pacemaker's
// pcmk_ipc_event_disconnect), kept out of the handler's own calls so that
// a handler of events is never handed an Event that is not one.
func WithDisconnectHandler(f func(err error)) DialOption {
	return dialOption(func(o *dialOptions) error { o.onDisconnect = f; return nil })
}

// WithWaitForNode makes Dial wait for a node that does not listen yet
// (ErrNodeNotReady) to appear, bounded by Dial's ctx, whose error it then
// returns. Dial retries every few milliseconds, backing off to 50 ms
// between tries with jitter, so a node is found at most about 50 ms after
// it listens. Without it, Dial returns ErrNodeNotReady at once.
func WithWaitForNode() DialOption {
	return dialOption(func(o *dialOptions) error { o.waitNode = true; return nil })
}

// Disconnected is the last message WithEventActor's actor gets from a
// connection, after its events: the connection ended, and Err (Conn.Err's
// value) says why. WithRequestActor's actor gets one too, unless it is the
// event actor.
type Disconnected struct {
	Err error
}

// Done returns a channel closed when the connection ends, for any reason:
// Close, or the node shutting down, dying or disconnecting this client.
// Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.gone }

// Err returns nil while the connection lives; once Done is closed, why it
// ended, which never changes afterwards. Match it with errors.Is:
//
//   - ErrClosed: this end closed it (Close).
//   - ErrNodeShutdown: the node shut down and said so.
//   - ErrNodeLost: the socket ended without a word from the node (it died
//     or was killed).
//   - ErrSlowConsumer: the node disconnected this client for not taking
//     its events; ErrProtocol: one end broke the protocol (the node said
//     so, or this end found it).
//
// All but ErrClosed and this end's ErrProtocol also match ErrNodeGone,
// which pending calls fail with.
//
// With WithReconnect, a gap (the node went away, the Conn redials) is not
// an end: Err stays nil and Done open until the Conn is closed or gives
// up; see WithReconnect.
func (c *Conn) Err() error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.rc.down {
		return nil
	}
	return c.goneErr
}

// ended reports whether the connection ended for good (Done is closed).
func (c *Conn) ended() bool {
	select {
	case <-c.gone:
		return true
	default:
		return false
	}
}

// endError is a text and the errors it matches: why the node ended a
// connection (a sentinel for the way it ended; the *Error with the code
// and reason, for errors.As), or what wrapErr wraps.
type endError struct {
	text string
	errs []error
}

func (e *endError) Error() string   { return e.text }
func (e *endError) Unwrap() []error { return e.errs }

// nodeLost is the reason of a connection whose socket ended without a
// Goodbye.
func nodeLost(detail string) error {
	return &endError{text: "switchboard: node lost: " + detail,
		errs: []error{ErrNodeLost, &Error{Code: CodeNodeGone, Reason: "lost: " + detail}}}
}

// goodbyeError is the reason of a connection the node ended with g.
func goodbyeError(g *pb.Goodbye) error {
	e := &Error{Code: Code(g.GetCode()), Reason: g.GetReason()}
	switch g.GetCode() {
	case pb.Code_CODE_NODE_SHUTTING_DOWN:
		return &endError{text: e.Error(), errs: []error{ErrNodeShutdown, e}}
	case pb.Code_CODE_OK:
		e.Code = CodeNodeGone
	}
	text := "switchboard: disconnected by the node: " + Code(g.GetCode()).String()
	if g.GetCode() == pb.Code_CODE_OK {
		text = "switchboard: disconnected by the node"
	}
	if r := g.GetReason(); r != "" {
		text += ": " + r
	}
	return &endError{text: text, errs: []error{ErrNodeGone, e}}
}

// pollEnded makes Fd readable for good once the connection ended (a poll
// loop then finds TryRecvEvent false and Err set). The caller holds emu.
func (c *Conn) pollEnded() {
	if c.polled.Load() && c.pollFd >= 0 {
		var one [8]byte
		one[0] = 1
		unix.Write(c.pollFd, one[:])
	}
}

// disconnected tells the event actor, the request actor and WithDisconnectHandler's
// f that the connection ended. The delivering goroutine calls it last.
func (c *Conn) disconnected() {
	err := c.err()
	if c.o.actorPID != nil {
		c.o.actorSys.Root.Send(c.o.actorPID, &Disconnected{Err: err})
	}
	if f := c.o.onDisconnect; f != nil {
		// Not on a goroutine of wg: Close waits for wg, and f may call Close.
		c.final.Go(func() {
			c.finalBegun.Store(true)
			f(err)
		})
	}
}

// requestActorGone tells WithRequestActor's actor that the connection
// ended, unless the event actor, the same, hears it.
func (c *Conn) requestActorGone() {
	if c.o.requestPID != nil && !c.o.requestPID.Equal(c.o.actorPID) {
		c.o.requestSys.Root.Send(c.o.requestPID, &Disconnected{Err: c.err()})
	}
}

// dialNode connects to the node's socket, waiting for the node to listen
// with WithWaitForNode.
func dialNode(ctx context.Context, o *dialOptions) (*net.UnixConn, error) {
	backoff := time.Millisecond
	for {
		sock, err := dialSocket(ctx, o.socket)
		if err == nil || !o.waitNode || !errors.Is(err, ErrNodeNotReady) {
			return sock, err
		}
		// Poll, not inotify: the socket's directory may not exist yet
		// either, and a stale socket a restarted node replaces is
		// ECONNREFUSED, not a missing file. A try is one connect(2).
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("switchboard: waiting for a node on %s (%v): %w", o.socket, err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// dialSocket connects to the socket once: ErrNodeNotReady when nobody
// listens there yet.
func dialSocket(ctx context.Context, socket string) (*net.UnixConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	switch {
	case err == nil:
		return nc.(*net.UnixConn), nil
	case errors.Is(err, unix.EACCES):
		return nil, fmt.Errorf("switchboard: dial %s: the socket's mode and group (or a directory's on the way) keep uid %d out: %w", socket, os.Geteuid(), err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.EAGAIN):
		return nil, wrapErr("dial "+socket+": node not ready", err, ErrNodeNotReady)
	}
	return nil, fmt.Errorf("switchboard: dial %s: %w", socket, err)
}
