package switchboard

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// HandleActor makes an actor serve service id: the node spawns it from
// props as a child of its root actor, which supervises it. Each request
// arrives as an *ActorRequest, which the actor answers with Respond, then
// or later. An actor that panics is restarted (up to 10 times in 10 s,
// then stopped), and the call it was serving fails at once with
// ErrInternal; once it is stopped, the calls waiting for it fail with
// ErrInternal and so does every later call to the service, until a new
// HandleActor. A connection may have WithMaxActorCalls calls waiting for
// actors; at its deadline or its caller's cancel a call is answered
// (ErrDeadlineExceeded, ErrCanceled) and forgotten, and a later Respond is
// counted late (NodeStats.LateReplies). Replacing the handler lets the
// earlier actor finish what is in its mailbox, then stops it.
//
// The actor's mailbox holds every request sent to it until it takes
// them, those whose callers gave up included: an actor slower than its
// callers should bound its mailbox (actor.WithMailbox in props).
func (n *Node) HandleActor(id uint16, props *actor.Props, opts ...ServiceOption) (*actor.PID, error) {
	pid, err := spawner{n}.SpawnChild(props, fmt.Sprintf("%s%d-%d", serviceActorPrefix, id, n.actorSeq.Add(1)))
	if err != nil {
		return nil, fmt.Errorf("switchboard: spawning the actor of service %d: %w", id, err)
	}
	s := &service{id: id, pid: pid}
	for _, opt := range opts {
		opt(s)
	}
	n.actorServices.Store(pid.GetId(), id)
	if old := n.services[id].Swap(s); old != nil && old.pid != nil {
		n.sys.Root.Poison(old.pid)
	}
	return pid, nil
}

// WithHandlerGrace sets how long a connection that ended waits for a
// handler still running before the node releases it without the handler
// (default 20 ms): a handler that watches its context should return
// within it. Past it, the node logs the handler at warn and counts it in
// NodeStats.StuckHandlers until it returns.
func WithHandlerGrace(d time.Duration) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if d <= 0 {
			return fmt.Errorf("switchboard: handler grace %v must be positive", d)
		}
		o.handlerGrace = d
		return nil
	})
}

// WithMaxActorCalls bounds the calls one connection may have waiting for
// actor handlers (HandleActor) at once (default 1024); past it, a call
// fails at once with ErrTooManyPending.
func WithMaxActorCalls(max int) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if max <= 0 {
			return fmt.Errorf("switchboard: max actor calls %d must be positive", max)
		}
		o.maxActorCalls = max
		return nil
	})
}

// serviceActorPrefix starts the names of the actors HandleActor spawns.
const serviceActorPrefix = "service-"

// ActorRequest is what an actor handler (HandleActor) receives. The actor
// must call Respond exactly once (for a Send it may not call it at all).
type ActorRequest struct {
	Service, Command uint16
	Payload          []byte // a copy: the actor may keep it
	Session          *Session
	NoReply          bool
	Context          context.Context // the caller's deadline and cancellation

	c  *conn.Endpoint
	id uint64
}

// Respond sends the reply. Any goroutine may call it. A reply that comes
// after the call's deadline, its cancel or its caller's end is discarded
// and counted late.
func (r *ActorRequest) Respond(payload []byte, err error) {
	if r.NoReply {
		return
	}
	r.c.Complete(r.id, result(payload, err))
}

// sendToActor hands a request to an actor handler; the result comes with
// Respond (conn.Result.Pending).
func (n *Node) sendToActor(ctx context.Context, c *conn.Endpoint, svc *service, sess *Session, r *conn.Incoming) conn.Result {
	if !r.NoReply && !c.ActorCallRoom() {
		return conn.Result{Code: pb.Code_CODE_TOO_MANY_PENDING,
			Payload: []byte(fmt.Sprintf("%d calls already wait for actor handlers", n.o.maxActorCalls))}
	}
	payload := r.Payload
	if !r.Owned {
		payload = append([]byte(nil), payload...)
	}
	n.sys.Root.Send(svc.pid, &ActorRequest{Service: r.Service, Command: r.Command, Payload: payload,
		Session: sess, NoReply: r.NoReply, Context: ctx, c: c, id: r.ID})
	if r.NoReply {
		return conn.Result{} // a send: Respond writes nothing
	}
	return conn.Result{Pending: true, Actor: svc.pid}
}

// rootActor is the node's supervisor: connection, group and service
// actors are its children.
type rootActor struct{ n *Node }

func (a *rootActor) Receive(ac actor.Context) {
	switch m := ac.Message().(type) {
	case *spawnChild:
		pid, err := ac.SpawnNamed(m.props, m.name)
		m.reply <- spawned{pid, err}
	case *actor.Terminated:
		a.n.serviceActorStopped(m.GetWho())
	}
}

// serviceActorStopped runs when a child of the root actor stops: if it
// served a service (HandleActor), the calls waiting for it fail, and so
// do later calls, unless the service has been handed to another actor.
func (n *Node) serviceActorStopped(pid *actor.PID) {
	v, ok := n.actorServices.LoadAndDelete(pid.GetId())
	if !ok {
		return
	}
	id := v.(uint16)
	if cur := n.services[id].Load(); cur != nil && cur.pid != nil && cur.pid.Equal(pid) {
		// The placeholder keeps the service's labels, so that Services
		// still lists it as registered, and says it stopped.
		desc := "(stopped: its actor is gone)"
		if cur.description != "" {
			desc = cur.description + " " + desc
		}
		dead := &service{id: id, h: HandlerFunc(func(context.Context, *Request) ([]byte, error) {
			return nil, fmt.Errorf("%w: the actor of service %d stopped", ErrInternal, id)
		}), name: cur.name, description: desc, commands: cur.commands}
		if n.services[id].CompareAndSwap(cur, dead) {
			n.o.logger.Error("service actor stopped; its calls fail until HandleActor gives it another", slog.Int("service", int(id)))
		}
	}
	for _, c := range n.reg.All() {
		c.FailActorCalls(pid)
	}
}

// deadLetter answers a request that reached an actor already gone (sent
// as it stopped, or after its service was handed to another actor).
func (n *Node) deadLetter(ev any) {
	dl, ok := ev.(*actor.DeadLetterEvent)
	if !ok {
		return
	}
	if r, ok := dl.Message.(*ActorRequest); ok && !r.NoReply {
		r.c.Complete(r.id, conn.Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte("the handler's actor is gone")})
	}
}

// Restarting a service actor too often means a handler that cannot work:
// it is stopped (serviceActorStopped).
var serviceStrategy = actor.NewOneForOneStrategy(10, 10*time.Second, actor.DefaultDecider)

// HandleFailure supervises the root actor's children (the actor's own
// strategy, which protoactor prefers to the props'). A failed service
// actor answers the call it was serving with ErrInternal, then restarts;
// any other child (a connection, a group, the registry) is stopped.
func (a *rootActor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, message any) {
	n := a.n
	if !strings.HasPrefix(child.GetId(), n.root.GetId()+"/"+serviceActorPrefix) {
		n.o.logger.Error("node actor failed; stopping it", slog.String("actor", child.GetId()), slog.Any("reason", reason))
		sup.StopChildren(child)
		return
	}
	n.actorPanics.Add(1)
	attrs := []any{slog.String("actor", child.GetId()), slog.Any("reason", reason)}
	if r, ok := actor.UnwrapEnvelopeMessage(message).(*ActorRequest); ok {
		r.c.Stats().Panics.Add(1)
		attrs = append(attrs, slog.Uint64("conn", r.c.ID()), slog.Int("service", int(r.Service)), slog.Int("command", int(r.Command)))
		if !r.NoReply {
			r.c.Complete(r.id, conn.Result{Code: pb.Code_CODE_INTERNAL, Payload: []byte("handler panicked")})
		}
	}
	n.o.logger.Error("service actor panicked", attrs...)
	serviceStrategy.HandleFailure(sys, sup, child, rs, reason, message)
}

var _ actor.SupervisorStrategy = (*rootActor)(nil)

// actorSeq numbers the actors HandleActor spawns (names must be unique).
type actorSeq = atomic.Uint64

// actorServices maps the ids of the actors HandleActor spawned to their
// service ids, until they stop.
type actorServices = sync.Map
