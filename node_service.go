package switchboard

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Handle registers h for service id, replacing any earlier handler.
func (n *Node) Handle(id uint16, h Handler, opts ...ServiceOption) {
	s := &service{id: id, h: h}
	for _, opt := range opts {
		opt(s)
	}
	n.services[id].Store(s)
}

// HandleFunc registers f for service id.
func (n *Node) HandleFunc(id uint16, f func(ctx context.Context, r *Request) ([]byte, error), opts ...ServiceOption) {
	n.Handle(id, HandlerFunc(f), opts...)
}

// Handler serves the requests of one service. The context carries the
// caller's deadline and ends when the caller cancels or disconnects.
// Returning ErrUnknownCommand tells the caller so; any other error reaches
// the caller as ErrHandler with the error's text.
type Handler interface {
	ServeIPC(ctx context.Context, r *Request) ([]byte, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) ([]byte, error)

// ServeIPC calls f.
func (f HandlerFunc) ServeIPC(ctx context.Context, r *Request) ([]byte, error) { return f(ctx, r) }

// Request is one call or send as a handler sees it.
type Request struct {
	Service, Command uint16
	// Payload is valid until the handler returns: it may be a view of the
	// shared ring, which the client can overwrite. Copy what you keep, and
	// treat the bytes as untrusted. A handler may return Payload, or part
	// of it, as its reply: the reply is copied out before the request's
	// memory is given back.
	Payload []byte
	// Session is the caller's connection as this service sees it.
	Session *Session
	// NoReply is set for a Send: the handler's result is discarded.
	NoReply bool
}

// SendEvent queues an event to the caller, from the service of the
// request, without the actor hop of Session.SendEvent: call it only from
// the handler, before it returns (a goroutine started by the handler uses
// Session.SendEvent). The payload goes into the ring at once; when the
// ring is full it waits for the client to make room (WithEventWait, 10ms
// by default), and is copied into the node's queue only if no room came
// in time, so it may be the request's Payload. Events sent by a handler
// arrive in the order it sent them. WriteEvent writes the payload in
// place instead.
func (r *Request) SendEvent(command uint16, payload []byte) {
	if r.NoReply && r.Session == nil {
		return
	}
	r.Session.c.SendEventFromServe(r.Service, command, payload)
}

// Session is one connection's use of one service: created at the
// connection's first request to the service, ended when the connection
// goes. Its Data belongs to the service (libqb's per-connection private
// data); handlers of one connection run one at a time, so it needs no lock.
type Session struct {
	Data any

	c       *conn.Endpoint
	service uint16
}

// ConnID returns the connection's id, unique in this run of the node (a
// restarted node counts from 1 again).
func (s *Session) ConnID() uint64 { return s.c.ID() }

// Address returns the connection's unique address.
func (s *Session) Address() string { return s.c.Address() }

// Name returns the name the client gave in its handshake.
func (s *Session) Name() string { return s.c.Name() }

// Cred returns the client's kernel-checked credentials.
func (s *Session) Cred() Cred { return credOf(s.c.Cred()) }

// Service returns the service this session belongs to.
func (s *Session) Service() uint16 { return s.service }

// SendEvent queues an event to this connection. It never blocks. The
// payload is shared, not copied, until the event reaches the ring: it must
// stay valid and unchanged until then, so never pass a request's Payload
// (copy it; Request.SendEvent may take it, during the handler).
func (s *Session) SendEvent(command uint16, payload []byte) {
	s.c.SendEvent(s.service, command, payload)
}

// ServiceOption configures a service in Handle.
type ServiceOption func(*service)

// WithAccept decides, at a connection's first request to the service,
// whether the caller may use it; a refused caller gets ErrRefused, and is
// asked again at its next request.
func WithAccept(accept func(Cred) bool) ServiceOption {
	return func(s *service) { s.accept = accept }
}

// WithOnConnect is called at a connection's first request to the service,
// before the request is served; an error refuses the request (ErrRefused
// with the error's text) and the session is not created.
func WithOnConnect(f func(*Session) error) ServiceOption {
	return func(s *service) { s.onConnect = f }
}

// WithOnDisconnect is called when a connection that used the service goes.
func WithOnDisconnect(f func(*Session)) ServiceOption {
	return func(s *service) { s.onDisconnect = f }
}

type service struct {
	id           uint16
	h            Handler
	pid          *actor.PID // set for an actor handler
	accept       func(Cred) bool
	onConnect    func(*Session) error
	onDisconnect func(*Session)

	name, description string // WithName, WithDescription
	commands          []CommandInfo
}

// connServer serves one connection's requests, on its pump goroutine.
type connServer struct {
	n        *Node
	sessions map[uint16]*Session
	svcs     map[uint16]*service
	req      Request // reused: a handler must not keep it
}

func (n *Node) newServer() *connServer {
	return &connServer{n: n, sessions: map[uint16]*Session{}, svcs: map[uint16]*service{}}
}

// Serve serves a call or a send (conn.Host).
func (s *connServer) Serve(ctx context.Context, c *conn.Endpoint, r *conn.Incoming) conn.Result {
	if r.Service == pb.BusService {
		return s.n.busOp(ctx, c, r)
	}
	s.n.calls.Add(1)
	svc := s.n.services[r.Service].Load()
	if svc == nil {
		var h Handler
		if sel := s.n.o.selector; sel != nil {
			h = sel(r.Service, r.Command)
		}
		if h == nil {
			return conn.Result{Code: pb.Code_CODE_UNKNOWN_SERVICE, Payload: []byte(fmt.Sprintf("no service %d", r.Service))}
		}
		svc = &service{id: r.Service, h: h}
	}
	sess := s.sessions[r.Service]
	if sess == nil {
		if err := s.n.allow(credOf(c.Cred()), ActionCall, strconv.Itoa(int(r.Service))); err != nil {
			return conn.Result{Code: pb.Code_CODE_REFUSED, Payload: []byte(err.Error())}
		}
		if svc.accept != nil && !svc.accept(credOf(c.Cred())) {
			return conn.Result{Code: pb.Code_CODE_REFUSED, Payload: []byte(fmt.Sprintf("service %d refuses uid %d", r.Service, credOf(c.Cred()).UID))}
		}
		sess = &Session{c: c, service: r.Service}
		if svc.onConnect != nil {
			if err := svc.onConnect(sess); err != nil {
				return conn.Result{Code: pb.Code_CODE_REFUSED, Payload: []byte(err.Error())}
			}
		}
		s.sessions[r.Service], s.svcs[r.Service] = sess, svc
	}
	if svc.pid != nil {
		return s.n.sendToActor(ctx, c, svc, sess, r)
	}
	s.req = Request{Service: r.Service, Command: r.Command, Payload: r.Payload, Session: sess, NoReply: r.NoReply}
	res := s.serveHandler(ctx, svc.h) // node_gather.go: ServeIPC, or ServeIPCBuffers
	s.req = Request{}
	return res
}

// Route routes a bus frame (conn.Host).
func (s *connServer) Route(c *conn.Endpoint, f conn.BusFrame) { s.n.route(c, f) }

// Closed runs the services' disconnect hooks and tells the node
// (conn.Host). The hooks of a connection released while a handler still
// runs wait for that handler to return (a session's handlers and its hook
// never run at the same time), and so does the end of its count against
// its uid's limit (a client cannot pile up stuck handlers past it); the
// node announces the end at once.
func (s *connServer) Closed(c *conn.Endpoint, why conn.Reason) {
	if c.Abandoned() {
		s.n.bg.Go(func() {
			<-c.Lingering()
			s.disconnected()
			s.n.mu.Lock()
			s.n.uncount(c.Cred().UID)
			s.n.mu.Unlock()
		})
	} else {
		s.disconnected()
	}
	s.n.connClosed(c, why)
}

func (s *connServer) disconnected() {
	for id, sess := range s.sessions {
		if f := s.svcs[id].onDisconnect; f != nil {
			f(sess)
		}
	}
}

// serveSystem serves SystemService.
func (n *Node) serveSystem(ctx context.Context, r *Request) ([]byte, error) {
	switch r.Command {
	case SysPing:
		return nil, nil
	case SysEcho:
		return r.Payload, nil // copied into the response ring before the request is released
	case SysInfo:
		conns := n.reg.Len()
		return gproto.Marshal(&pb.NodeInfo{Name: n.o.name, Version: Version, Pid: int32(os.Getpid()), Uid: uint32(os.Geteuid()),
			StartedUnixNano: n.started.UnixNano(), Connections: uint32(conns), Calls: n.calls.Load(), Events: n.events.Load(),
			TransportDefault: pb.Transport_TRANSPORT_SHM})
	case SysServices:
		return n.serveServices()
	case SysNodes:
		return gproto.Marshal(clusterProto(n.ClusterNodes()))
	}
	return nil, ErrUnknownCommand
}

// result turns a handler's return values into a wire result.
func result(payload []byte, err error) conn.Result {
	if err == nil {
		return conn.Result{Payload: payload}
	}
	code, text := wireError(err)
	return conn.Result{Code: code, Payload: []byte(text)}
}
