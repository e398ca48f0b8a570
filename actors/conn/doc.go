// Package conn implements the node's end of one client connection, the
// Endpoint: a protoactor-go actor and the pump goroutine that runs it.
//
// # Execution
//
// The pump is the connection's only goroutine that touches its rings. It
// drains the request ring in batches and serves each request inline,
// through the node's Host (Serve for calls and sends, Route for bus
// frames), then runs the actor's mailbox: the actor uses a dispatcher that
// hands each mailbox run to the pump instead of starting a goroutine, so
// Receive always runs on the pump, and the actor is the only writer of the
// response and event rings. The pump parks (a shm.Parker) on one doorbell
// shared by the request ring (data), the response and event rings (space)
// and the mailbox (a wake from the dispatcher).
//
// # Ordering
//
// Replies leave in the order the pump finishes requests; a request's
// chunks are contiguous. Events sent to one connection from one goroutine
// arrive in send order.
//
// # Backpressure
//
// A full response ring blocks the pump (the client is not reading its
// replies: flow control). A full event ring never blocks: events wait in a
// bounded queue, and past its bounds the connection's policy drops the
// oldest (the next event delivered carries the count) or disconnects the
// client as a slow consumer. The actor's mailbox is bounded too, by what
// the event ring and the queue could hold together: past that, events are
// dropped before they are sent, and counted the same way.
//
// # The bus
//
// Bus frames from the client (sends, publications, requests to peers) go
// to Host.Route on the pump; it hands each message to Deliver, which
// collects them per destination and sends each destination one actor
// message per batch of frames read, in routing order. Requests to peers
// are tracked twice: the caller's pump counts the replies it waits for
// (and gathers a group's), and the callee keeps the handles of the
// requests delivered to it under a lock, so that its release can answer
// every one of them CODE_PEER_GONE, and a request its queue cannot take is
// failed, never dropped silently.
//
// # Lifetime
//
// A connection ends when its socket reaches EOF (the client closed it or
// died), when the client breaks the protocol, or when the node stops it.
// In every case the actor is stopped through protoactor (so its parent
// sees Terminated), the pump exits after the actor's Stopped, then
// Host.Closed runs and the rings and socket are released. Done is closed
// when all of that is finished.
//
// # Locks
//
// Every lock of an Endpoint is a leaf, never held while another is taken:
// sockMu (writes to the socket), qmu (mailbox runs handed to the pump),
// mapMu (Fill against the unmapping), bus.inMu (the requests delivered to
// the client).
package conn
