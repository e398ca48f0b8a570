package switchboard

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// HandleActor makes an actor serve service id: the node spawns it from
// props as a child of its root actor, which supervises it. Each request
// arrives as an *ActorRequest, which the actor answers with Respond, then
// or later. An actor that panics is restarted (up to 10 times in 10 s,
// then stopped), and the call it was serving fails at once with
// ErrInternal. A connection may have MaxActorCalls calls waiting for
// actors (WithMaxActorCalls); a call is forgotten at its deadline, when
// its caller cancels, or when the caller leaves, and a later Respond is
// counted late (NodeStats.LateReplies). Replacing the handler lets the
// earlier actor finish what is in its mailbox, then stops it.
func (n *Node) HandleActor(id uint16, props *actor.Props, opts ...ServiceOption) (*actor.PID, error) {
	pid, err := spawner{n}.SpawnChild(props, fmt.Sprintf("%s%d-%d", serviceActorPrefix, id, n.actorSeq.Add(1)))
	if err != nil {
		return nil, fmt.Errorf("switchboard: spawning the actor of service %d: %w", id, err)
	}
	s := &service{id: id, pid: pid}
	for _, opt := range opts {
		opt(s)
	}
	if old := n.services[id].Swap(s); old != nil && old.pid != nil {
		n.sys.Root.Poison(old.pid)
	}
	return pid, nil
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
	return conn.Result{Pending: true}
}

// rootActor is the node's supervisor: connection, group and service
// actors are its children.
type rootActor struct{ n *Node }

func (a *rootActor) Receive(ac actor.Context) {
	if m, ok := ac.Message().(*spawnChild); ok {
		pid, err := ac.SpawnNamed(m.props, m.name)
		m.reply <- spawned{pid, err}
	}
}

// Restarting a service actor too often means a handler that cannot work:
// it is stopped, and its callers get ErrInternal at once from then on
// (dead letters) or wait for their deadline.
var serviceStrategy = actor.NewOneForOneStrategy(10, 10e9, actor.DefaultDecider)

// HandleFailure supervises the root actor's children (the actor's own
// strategy, which protoactor prefers to the props'). A failed service
// actor answers the call it was serving with ErrInternal, then restarts;
// any other child (a connection, a group, the registry) is stopped.
func (a *rootActor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, message any) {
	n := a.n
	if !strings.Contains(child.GetId(), "/"+serviceActorPrefix) {
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
	n.o.logger.Error("service actor panicked; restarting it", attrs...)
	serviceStrategy.HandleFailure(sys, sup, child, rs, reason, message)
}

var _ actor.SupervisorStrategy = (*rootActor)(nil)

// actorSeq numbers the actors HandleActor spawns (names must be unique).
type actorSeq = atomic.Uint64
