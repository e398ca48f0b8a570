package switchboard

import (
	"context"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The client's options: what Dial takes (DialOption values; the shared
// option types are in options.go), and the transports.

// dialOptions is what the DialOptions set.
type dialOptions struct {
	transport    Transport
	socket       string
	name         string
	rings        [3]uint32
	maxMessage   uint32
	nodeUID      *uint32
	onEvent      func(Event)
	onRequest    func(context.Context, *PeerRequest) ([]byte, error)
	inline       bool
	requestConc  int    // WithRequestConcurrency
	features     uint32 // what Hello asks for: all the client knows (tests ask for less)
	requestSys   *actor.ActorSystem
	requestPID   *actor.PID
	actorSys     *actor.ActorSystem
	actorPID     *actor.PID
	eventQueue   int
	spin         *time.Duration
	closeTimeout *time.Duration // WithCloseTimeout

	onDisconnect func(error)      // WithDisconnectHandler
	waitNode     bool             // WithWaitForNode
	reconnect    *ReconnectPolicy // WithReconnect
}

// Transport is how a connection's frames travel.
type Transport int

const (
	// TransportSHM: shared-memory rings in a sealed memfd (the default).
	TransportSHM Transport = iota
	// TransportSocket: the same frames over the Unix socket, for a client
	// that cannot map memory shared with the node.
	TransportSocket
)

// String returns "shm" or "socket".
func (t Transport) String() string {
	switch t {
	case TransportSHM:
		return "shm"
	case TransportSocket:
		return "socket"
	}
	return "transport " + strconv.Itoa(int(t))
}

// WithTransport chooses how frames travel (default TransportSHM).
func WithTransport(t Transport) DialOption {
	return dialOption(func(o *dialOptions) error { o.transport = t; return nil })
}

// WithClientName names this client to the node (listings, logs).
func WithClientName(name string) DialOption {
	return dialOption(func(o *dialOptions) error { o.name = name; return nil })
}

// WithNodeUID sets the uid the node's process must run as; the default
// accepts root and this process's own uid. A node running as anyone else
// is refused with ErrNotAuthentic before anything is sent to it.
func WithNodeUID(uid uint32) DialOption {
	return dialOption(func(o *dialOptions) error { o.nodeUID = &uid; return nil })
}

// WithEventHandler delivers events to f, called in order on a goroutine of
// the connection's own. f must not call Close (Close waits for that
// goroutine): hand the Close to another goroutine. The end of the
// connection comes to WithDisconnectHandler's f, after the last event.
func WithEventHandler(f func(Event)) DialOption {
	return dialOption(func(o *dialOptions) error { o.onEvent = f; return nil })
}

// WithEventActor delivers each event as an *Event message to pid, and
// then, when the connection ends, a *Disconnected.
func WithEventActor(sys *actor.ActorSystem, pid *actor.PID) DialOption {
	return dialOption(func(o *dialOptions) error { o.actorSys, o.actorPID = sys, pid; return nil })
}
