package pb

// The frame envelope of the node protocol. Every frame, on a ring or on the
// socket, is an shm frame: a 24-byte header (kind, flags, service, command,
// aux, id) and a body. These constants give the header its meaning.

// ProtocolVersion is the version a client sends in Hello and a node
// accepts.
const ProtocolVersion = 1

// Frame kinds.
const (
	// KindControl carries a Control message in its body. Socket only.
	KindControl uint16 = 1
	// KindCall is a request that wants a reply. ID is the call id, unique
	// among the connection's calls in flight; Aux is the time the caller
	// still waits, in microseconds (0: no deadline).
	KindCall uint16 = 2
	// KindSend is a request without reply. ID is a sequence number.
	KindSend uint16 = 3
	// KindReply answers a KindCall with the same ID. Aux is a Code; for
	// CODE_HANDLER_ERROR the body is the error text.
	KindReply uint16 = 4
	// KindEvent is an asynchronous message from the node. ID is the event's
	// number among all events offered to this connection, dropped ones
	// included; Aux is how many were dropped just before this one (the
	// overflow policy's gap), so ID grows by 1 + Aux.
	KindEvent uint16 = 5
)

// FlagMore marks a chunk of a message too large for one frame: more frames
// with the same kind and ID follow, the last one without the flag.
const FlagMore uint16 = 1 << 0

// Rings of a shared-memory connection, in segment order. The node creates
// the segment.
const (
	RingRequest  = 0 // client → node: calls and sends
	RingResponse = 1 // node → client: replies
	RingEvent    = 2 // node → client: events
)

// Doorbells of a shared-memory connection, in the order they follow the
// segment in the Welcome message's descriptors.
const (
	BellNode         = 0 // the node's pump: request data, response and event space
	BellClient       = 1 // the client's pump: response and event data
	BellRequestSpace = 2 // a client caller waiting for room in the request ring
)
