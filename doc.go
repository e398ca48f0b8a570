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
// # Model
//
// A service is one of 65,536 numbered endpoints, each with 65,536 commands
// (libqb, corosync's coroipc). A connection has a request ring (client to
// node), a response ring and an event ring (node to client), in one sealed
// memfd passed over the Unix socket that stays open for control and
// liveness. The node reads the client's uid, gid and pid from the kernel
// (SO_PEERCRED) and the client checks the node's the same way.
//
// # The bus
//
// Every connection has a unique address (":n1.42"), never reused while
// the node runs. Clients reach each other directly (SendTo, Request, to an
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
// their calls are pipelined. On the node, each connection's requests are
// served one at a time, in order, on the connection's pump goroutine
// (handlers of different connections run in parallel); a handler that
// blocks holds up its own connection only. Handlers that should not block
// it can be actors (HandleActor), which reply when they are done.
//
// # Errors
//
// Errors are matched with errors.Is against the sentinels (ErrRefused,
// ErrNodeGone, ErrUnknownService, …), which compare wire codes, not text.
package switchboard
