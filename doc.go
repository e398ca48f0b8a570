// Package switchboard is a local IPC bus for Go programs that share a host:
// numbered services with synchronous calls and asynchronous events, and a
// bus of addresses, groups and names between clients, through
// shared-memory rings, on protoactor-go actors.
//
// A program serves with a Node (embedded, or the cmd/node daemon) and
// connects with Dial:
//
//	node, _ := switchboard.NewNode(switchboard.WithSocket(path))
//	node.HandleFunc(7, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
//		return append([]byte("echo: "), r.Payload...), nil
//	})
//	go node.ListenAndServe(ctx)
//
//	c, _ := switchboard.Dial(ctx, switchboard.WithSocket(path))
//	reply, err := c.Call(ctx, 7, 1, []byte("hi"))
//
// The package's examples show each part at work, each with a node of its
// own: calls, services and sessions, the ways to receive events,
// publish/subscribe with notices, names and peer requests, embedding a
// node, and actors.
//
// # Model
//
// A service is one of 65,536 numbered endpoints, each with 65,536 commands
// (libqb, corosync's coroipc). A connection has a request ring (client to
// node), a response ring and an event ring (node to client), in one sealed
// memfd passed over the Unix socket that stays open for control and
// liveness. The node reads the client's uid, gid and pid from the kernel
// (SO_PEERCRED) and the client checks the node's the same way. Nobody
// else may replace the node's socket: Listen refuses a directory that
// another uid owns or that its group or others may write, and gives the
// socket its mode and group (WithSocketMode, WithSocketGroup).
//
// A service may carry a name, a description and documented commands
// (WithName, WithDescription, WithCommand in Handle): labels that
// Conn.Services lists, through the system service's SysServices command,
// like busctl introspect. Calls still address services by number.
//
// # The bus
//
// Every connection has a unique address (":n1.mx2z3pcd1ldw.42": the
// node's name, the node's run, the connection's id), never reused, not
// even by the node restarted: an address kept from before a restart is
// undeliverable, never someone else's. Clients reach each other directly (SendTo, Request, to an
// address or to a well-known name a client Owns), through groups
// (Subscribe, Publish, RequestGroup), and follow who comes and goes on the
// reserved groups sys.connections, sys.groups and sys.names, whose notices
// come in one order. Nothing waits on a peer that cannot answer: a request
// to nobody is ErrUndeliverable at once, to a peer that disconnects
// ErrPeerGone at once. Messages from one sender to one destination arrive
// in send order. A Policy decides, from kernel-checked credentials, who may
// do what, on every path.
//
// # Concurrency
//
// A Conn is safe for concurrent use: many goroutines may Call at once and
// their calls are pipelined. One goroutine may keep many calls in flight
// too, without a goroutine each: Go and GoRequest start a call or a peer
// request and return at once, and the connection completes each on a
// channel (net/rpc's Client.Go). On the node, each connection's requests are
// served one at a time, in order, on the connection's pump goroutine
// (handlers of different connections run in parallel); a handler that
// blocks holds up its own connection only, and not its end: once the
// client is gone the node releases the connection without it (see
// NodeStats.StuckHandlers). Handlers that should not block it can be
// actors (HandleActor), which reply when they are done. A
// client's handler of peer requests runs on the client's goroutines, one
// at a time or up to WithRequestConcurrency at once (see Serving requests from peers).
//
// # Receiving events: which delivery mode
//
// A connection's events (from services, peers, groups and the node) come
// in order, in one of six ways; choose one per connection:
//
//   - RecvEvent: a goroutine of yours pulls them, each a copy (Release
//     hands the payload's buffer back for reuse). The default choice.
//   - RecvEvents: the same in batches, into a slice of yours, each
//     payload copied into the buffer its slot held: no allocation once
//     the buffers have grown, one release of the ring per batch (large
//     events are given back as they are copied, and a batch ends at
//     about 256 KiB), and no hand-off between goroutines while events
//     keep coming. The choice
//     for throughput; it mixes with RecvEvent, RecvEventView and
//     TryRecvEvent, in order. (RecvEvent and RecvEvents read shared
//     memory themselves: TryRecvEvent and Fd see the events that come
//     while one is in use, and for about a millisecond after, only once
//     the pump took the ring back.)
//   - RecvEventView: the same without the copy when the event is still in
//     the ring: the fastest for large payloads, at the price of a Release
//     that must come soon (see below).
//   - WithEventHandler: a goroutine of the connection calls your function,
//     in order. The simplest; the handler must not call Close.
//   - WithEventActor: each event is sent to a protoactor actor as *Event,
//     for programs built of actors.
//   - Fd and TryRecvEvent (poll mode): a descriptor that polls readable
//     while events wait, for a program with its own epoll or select loop.
//
// Each learns the end of the connection, after the events that came
// before it: RecvEvent, RecvEvents and RecvEventView return Err's error at once;
// WithDisconnectHandler's function is called after the handler's last
// event (it may call Close); the actor gets a *Disconnected; Fd stays
// readable for good and TryRecvEvent returns false, and the loop then
// finds Err set (as a bufio.Scanner's caller checks Err when Scan returns
// false). A poll loop must make that check and stop polling Fd once Err
// is set: Fd stays readable, and a loop that only drains TryRecvEvent
// spins at 100% CPU (loops written before the connection learnt its end
// waited forever there instead; see examples/pollmode). Done and Err
// tell anyone else. Err says why: ErrClosed (Close),
// ErrNodeShutdown (the node said goodbye), ErrNodeLost (it died or was
// killed), ErrSlowConsumer (evicted), ErrProtocol; the node's ends also
// match ErrNodeGone, which the calls in flight fail with.
//
// # Coming back
//
// A Conn dialled WithReconnect survives its node: when the node goes away
// (ErrNodeShutdown, ErrNodeLost) it redials the socket with a jittered
// backoff (ReconnectPolicy), joins its groups again, claims its names
// again (as standby if someone took one meanwhile) and has its name
// clients read their names' owners again. Each gap comes, in order with
// the other events and in the Conn's delivery mode, as an
// EventDisconnected and then an EventReconnected; Event.Reconnection says
// why, the old and new address, and what was restored or lost. During a
// gap Done stays open and Err nil; calls in flight fail with ErrNodeGone
// and are never sent again; new calls fail at once with ErrNodeGone, or,
// made with a ctx from WaitForReconnect, wait for the Conn to be back.
//
// Requests from peers go to WithRequestHandler, WithRequestActor, or, with
// neither, arrive as events of kind EventRequest.
//
// A NameClient (NewNameClient) is a client of one well-known name on a
// Conn, after pacemaker's IPC API objects: it follows the name's owner,
// sends it requests by name, and receives its notifications from a group,
// through callbacks on a goroutine of its own, a poll descriptor of its
// own (Fd, TryNext) or Next. It takes from the Conn's events the notices
// about its name and its group's messages; the Conn's delivery mode keeps
// everything else (and gets those too for a group the Conn is a member
// of on its own: joined before its first name client did, or subscribed
// to since), so any number of name clients share a Conn.
//
// # Serving requests from peers
//
// A request's context (the handler's ctx, PeerRequest.Context) carries
// its caller's deadline, and is cancelled when the caller gives up (its
// ctx is cancelled, or its deadline passes at the node) or disconnects,
// however it ends (Close, a crash, SIGKILL); context.Cause says which. An
// answer sent after that is dropped by the node, and counted. The handler
// serves one request at a time, in arrival order, unless
// WithRequestConcurrency allows more: then a handler that does not return
// holds only its own goroutine, and replies may leave in any order (each
// reaches its own caller). WithInlineRequests runs the handler where the
// request is read: one at a time, with the deadline but without the
// cancellation. EventRequest events carry neither.
//
// # Backpressure
//
// Nothing grows without bound, and nothing is lost without a count:
//
//   - Calls and sends: the request ring is the window. A full ring makes
//     Call, Send, SendTo and Publish wait for room (ctx bounds the wait;
//     for a message larger than one frame, the wait for its first frame:
//     once begun, a message is finished unless the connection ends).
//     The node serves one connection's requests one at a time, in order;
//     a handler that blocks holds up its own connection only. A client that
//     does not read its replies fills its response ring and stops its own
//     connection's pump, nobody else's.
//   - Events: a client that does not take its events first fills its own
//     buffer (WithEventQueue, default 1024 events), then stops reading its
//     event ring; once that is full the node queues events for it
//     (WithEventQueue and WithEventQueueBytes on the node), and past that
//     bound applies WithOverflow: DropOldest drops the oldest queued event
//     and the client sees the count in the next event's Dropped, or
//     DisconnectSlow disconnects it (ErrSlowConsumer). Publishers and
//     services never wait for a slow receiver.
//   - Bus messages: SendTo and Publish return once the message is in the
//     request ring; with WantAnswer they wait for the node's verdict
//     (ErrUndeliverable when nobody can take it). A request is never
//     dropped silently: a peer whose queue cannot take it makes it fail
//     with ErrUndeliverable at once, a peer that leaves with ErrPeerGone,
//     and the replies one connection waits for are bounded (WithMaxPending,
//     ErrTooManyPending past it).
//   - Accepted messages: a message Send, SendTo or Publish accepted
//     (returned nil for) is taken by the node unless the connection ends
//     first, and then it is counted. Flush waits until the node has taken
//     everything accepted before the call; Close flushes first (bounded by
//     WithCloseTimeout, default 5 s; calls in flight are not waited for)
//     and returns an *UnsentError (errors.Is ErrUnsent) with the count of
//     accepted messages not confirmed taken, also in FlowControl.Unsent;
//     the node serves the messages (not the calls) a client wrote before
//     its goodbye before it ends the connection. With
//     the socket transport, a message written to the socket counts as
//     taken (a live node reads it, goodbye or not); Flush also waits for
//     the node's answer behind it. A count Close reports after its timeout
//     with a node that is slow, not gone, is an upper bound: the node may
//     still serve some of them. Drain leaves the groups, hands the events
//     already received to the application, flushes and closes.
//
// # Zero-copy views and how long they live
//
// Some payloads are views of shared memory that the other side may
// overwrite once they are given back: treat their bytes as untrusted, and
// copy what you keep.
//
//   - Request.Payload (a service handler's): valid until the handler
//     returns. The handler may return it, or part of it, as its reply.
//   - PeerRequest.Payload with WithInlineRequests: valid until the handler
//     returns (otherwise it is a copy the handler may keep).
//   - Event.Payload from RecvEventView: valid until the event's Release,
//     which must be called, before Close too; until then the connection's
//     other events wait.
//   - Reply.Body from CallView: valid until the reply's Release, which must
//     be called, before Close too; until then the connection's other
//     replies wait.
//
// Payloads you send are copied into the ring before the call returns,
// except Session.SendEvent's and Node.SendEvent's, which are shared until
// the event reaches the ring: do not change them afterwards.
//
// Every send also takes its payload gathered from parts (net.Buffers):
// CallBuffers, SendBuffers, SendToBuffers, PublishBuffers, RequestBuffers,
// RequestGroupBuffers, GoBuffers, GoRequestBuffers; on the node
// Request.SendEventBuffers, Session.SendEventBuffers,
// Node.SendEventBuffers, and a BuffersHandler's reply. The parts are
// copied into the ring one after the other, never joined first, on the
// same terms as a single payload; the receiver sees their concatenation.
//
// # Actors are optional
//
// The node runs on protoactor-go, but a program that uses no actors never
// names one of its types. Four identifiers mention them, each for programs
// built of actors: WithEventActor and WithRequestActor (a client's events
// and peer requests sent to an actor's PID), Node.HandleActor (an actor
// spawned from Props serves a service) and Node.ActorSystem (the node's
// actor system). Everything else takes and returns this package's types
// and plain Go values: services are Handler values or functions (Handle,
// HandleFunc), a client's events are pulled (RecvEvent, TryRecvEvent) or
// handed to a function (WithEventHandler), peer requests go to a function
// (WithRequestHandler). The messages an actor receives are this
// package's own types: *ActorRequest, and *Event and *PeerRequest, the
// values the other ways deliver. TestActorTypesOnlyInActorAPI keeps the
// list of four true. Importing the package still links protoactor-go into
// the program.
//
// # Several nodes
//
// A node started WithFederation joins a cluster through a Federation (the
// links between nodes; package actors/cluster makes them over protoactor-go
// remote, and only programs that federate import it). Its clients' API
// does not change: an address (":n2.17.4") reaches a connection on another
// node, a group's members on every node get its publications (each crosses
// a link once), Members, SubscribeWithMembers and RequestGroup see the whole
// cluster, and a request waiting on a node that is lost fails with
// ErrPeerGone at once. The other nodes' connections are announced on
// sys.connections and sys.groups like local ones (Member.Cred.Node names
// their node; DisconnectNodeLost when their node is lost), and nodes joining
// and leaving on GroupNodes (sys.nodes). Each node's notices keep their own
// order; there is no total order across nodes. A well-known name has one
// owner and one standby queue across the cluster, decided by one node per
// name; in a partition each side keeps or elects an owner, and when it
// heals one of them keeps the name (the other hears NoticeNameLost).
//
// # Errors
//
// Errors from the node, a peer or this end are *Error values, matched with
// errors.Is against the sentinels (ErrRefused, ErrNodeGone,
// ErrUnknownService, …), which compare codes, not text; errors.As gives
// the code and the reason. A few sentinels of this end are plain errors,
// matched the same way: ErrClosed, and the ends of a connection
// ErrNodeShutdown and ErrNodeLost (which also match ErrNodeGone), and
// Dial's ErrNodeNotReady: no node listens on the socket yet (no socket,
// or a stale one), worth retrying, or waited for with WithWaitForNode.
package switchboard
