package pb

import (
	"encoding/binary"
	"errors"
	"slices"
)

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

	// Bus frames, client → node. The body starts with the destination: one
	// length byte and that many bytes (an address, a well-known name or a
	// group), then the payload.

	// KindPeerSend sends a message to an address or a well-known name. With
	// FlagWantAnswer, ID is a call id and the node replies (KindReply, a
	// little-endian u32 count of recipients) or fails it with
	// CODE_UNDELIVERABLE; without, ID is a sequence number.
	KindPeerSend uint16 = 6
	// KindPublish publishes to a group; ID and FlagWantAnswer as for
	// KindPeerSend. FlagEcho delivers it to the sender too if it is a
	// member.
	KindPublish uint16 = 7
	// KindPeerCall is a request to an address or a well-known name. ID is
	// the call id, Aux the deadline as for KindCall. The reply comes as a
	// KindReply with that ID.
	KindPeerCall uint16 = 8
	// KindGroupCall is a request to every member of a group but the sender.
	// ID and Aux as for KindPeerCall; the one reply is a GroupReply.
	KindGroupCall uint16 = 9
	// KindPeerReply answers a request delivered to this client. The body
	// starts with the request's 16-byte reply handle; ID is unused; Aux is
	// a Code.
	KindPeerReply uint16 = 10

	// Frames of a direct peer channel's rings only (FEATURE_DIRECT_PEERS;
	// see WIRE.md). Its request ring carries KindPeerCall (ID the caller's
	// call id, Aux the deadline; the body is the payload, no destination)
	// and KindPeerSend (the body is the payload), and these two; its reply
	// ring carries KindReply (ID the call id, Aux a Code).

	// KindDirectCancel: the caller of request ID stopped waiting.
	KindDirectCancel uint16 = 11
	// KindDirectEnd: the caller writes nothing after it on this channel.
	KindDirectEnd uint16 = 12
)

// Flags of bus frames.
const (
	// FlagWantAnswer: the sender wants to know whether anyone got it.
	FlagWantAnswer uint16 = 1 << 1
	// FlagEcho: a publication reaches the sender too.
	FlagEcho uint16 = 1 << 2
)

// The bus service: its commands are bus operations (a call whose body and
// reply are the messages named), and its events are bus messages.
const (
	BusService uint16 = 0xFFFE

	// Operations (calls).
	BusSubscribe            uint16 = 1  // BusGroup → empty
	BusSubscribeWithMembers uint16 = 2  // BusGroup → MemberList
	BusUnsubscribe          uint16 = 3  // BusName → empty
	BusOwn                  uint16 = 4  // BusName → OwnReply
	BusRelease              uint16 = 5  // BusName → empty
	BusMembers              uint16 = 6  // BusName → MemberList
	BusGroups               uint16 = 7  // empty → GroupList
	BusNames                uint16 = 8  // empty → NameList
	BusConnections          uint16 = 9  // empty → ConnectionList
	BusMonitor              uint16 = 10 // BusWatch → empty
	// BusSync answers at once, empty: the node serves a connection's
	// requests in order, so its answer means every frame written before
	// the call was taken (the socket transport's Flush).
	BusSync uint16 = 11 // empty → empty
	// Direct peer channels (FEATURE_DIRECT_PEERS; see WIRE.md).
	BusDirectOpen  uint16 = 12 // BusName (an address) → DirectRef
	BusDirectStart uint16 = 13 // DirectRef → empty; sent as KindSend
	BusDirectClose uint16 = 14 // DirectRef → empty; sent as KindSend

	// Messages (events). The event body starts with the sender's address
	// and the destination it was sent to (a length byte and the bytes,
	// each); a request's then has its 16-byte reply handle; the payload
	// follows.
	MsgDirect  uint16 = 1 // to this client's address or a name it owns
	MsgGroup   uint16 = 2 // published to a group it belongs to
	MsgRequest uint16 = 3 // a request, to be answered with KindPeerReply
	MsgNotice  uint16 = 4 // a Notice from the node; the sender is ""
	// MsgCancel (FEATURE_PEER_CONTEXT only): the caller of a request
	// delivered to this client stopped waiting; its body is not a
	// message's but a CancelBody.
	MsgCancel uint16 = 5
	// MsgDirectStart (FEATURE_DIRECT_PEERS only): the sender's requests
	// and messages to this client continue on the direct channel whose id
	// is the body (8 bytes, little-endian); see WIRE.md.
	MsgDirectStart uint16 = 6
	// MsgMonitor + a bus frame kind (KindPeerSend … KindGroupCall): a copy
	// of a message, for a monitor; no reply handle.
	MsgMonitor uint16 = 16
)

// ReplyHandleSize is the size of a request's reply handle.
const ReplyHandleSize = 16

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

// Reserved groups, on which the node publishes its notices (MsgNotice
// events whose payload is a Notice). Clients subscribe to them like to any
// other group, and may not publish to them.
const (
	GroupConnections = "sys.connections" // connected, disconnected
	GroupGroups      = "sys.groups"      // subscribed, unsubscribed
	GroupNames       = "sys.names"       // name owner changed
	GroupNodes       = "sys.nodes"       // node joined, node left (a federated node)
)

// MaxNameLen is the longest address, well-known name or group, in bytes.
const MaxNameLen = 255

// MaxMsgOverhead is the most a bus message's event body adds to its
// payload (AppendMsg's prefix, with a request's deadline): a receiver
// accepts events this much larger than its negotiated maximum message.
const MaxMsgOverhead = MsgOverheadNoDeadline + DeadlineSize

// MsgOverheadNoDeadline is MaxMsgOverhead for a client without
// FEATURE_PEER_CONTEXT, whose requests carry no deadline: the most such a
// client accepts beyond its maximum message (528).
const MsgOverheadNoDeadline = 2 + 2*MaxNameLen + ReplyHandleSize

// DeadlineSize is the size of a request's deadline in its event body
// (FEATURE_PEER_CONTEXT): microseconds to go, 0 for none, a u32.
const DeadlineSize = 4

// CancelSize is the size of a MsgCancel body: the request's reply handle,
// then why its caller stopped waiting, a Code as a u32.
const CancelSize = ReplyHandleSize + 4

// AppendMsg appends a bus message's event body: the sender's address, the
// destination, a request's reply handle (nil for other messages), then
// the payload. from and to must be at most MaxNameLen bytes.
func AppendMsg(b []byte, from, to string, handle []byte, payload []byte) []byte {
	b = slices.Grow(b, 2+len(from)+len(to)+len(handle)+len(payload)) // one allocation, not one per part
	b = append(b, byte(len(from)))
	b = append(b, from...)
	b = append(b, byte(len(to)))
	b = append(b, to...)
	b = append(b, handle...)
	return append(b, payload...)
}

// MsgPrefixLen returns the length of the prefix AppendMsg writes.
func MsgPrefixLen(from, to string, request bool) int {
	n := 2 + len(from) + len(to)
	if request {
		n += ReplyHandleSize
	}
	return n
}

// DecodeMsg splits a bus message's event body; request says whether it
// carries a reply handle. The results are views of body.
func DecodeMsg(body []byte, request bool) (from, to []byte, handle, payload []byte, err error) {
	from, body, ok := cutName(body)
	if !ok {
		return nil, nil, nil, nil, ErrBadMsg
	}
	to, body, ok = cutName(body)
	if !ok {
		return nil, nil, nil, nil, ErrBadMsg
	}
	if request {
		if len(body) < ReplyHandleSize {
			return nil, nil, nil, nil, ErrBadMsg
		}
		handle, body = body[:ReplyHandleSize], body[ReplyHandleSize:]
	}
	return from, to, handle, body, nil
}

// AppendRequest appends a request's event body for a client with
// FEATURE_PEER_CONTEXT: AppendMsg's, with the deadline (micros to go, 0:
// none) after the reply handle.
func AppendRequest(b []byte, from, to string, handle []byte, micros uint32, payload []byte) []byte {
	b = slices.Grow(b, MsgPrefixLen(from, to, true)+DeadlineSize+len(payload)) // one allocation
	b = AppendMsg(b, from, to, handle, nil)
	b = binary.LittleEndian.AppendUint32(b, micros)
	return append(b, payload...)
}

// WithoutDeadline returns a copy of AppendRequest's body as AppendMsg
// would have made it, for a client without FEATURE_PEER_CONTEXT.
func WithoutDeadline(body []byte) ([]byte, error) {
	_, _, _, rest, err := DecodeMsg(body, true)
	if err != nil || len(rest) < DeadlineSize {
		return nil, ErrBadMsg
	}
	n := len(body) - len(rest) // the prefix, handle included
	out := make([]byte, 0, len(body)-DeadlineSize)
	out = append(out, body[:n]...)
	return append(out, rest[DeadlineSize:]...), nil
}

// DecodeRequest splits a request's event body as AppendRequest makes it.
// The results are views of body.
func DecodeRequest(body []byte) (from, to, handle []byte, micros uint32, payload []byte, err error) {
	from, to, handle, rest, err := DecodeMsg(body, true)
	if err != nil || len(rest) < DeadlineSize {
		return nil, nil, nil, 0, nil, ErrBadMsg
	}
	return from, to, handle, binary.LittleEndian.Uint32(rest), rest[DeadlineSize:], nil
}

// AppendCancel appends a MsgCancel body: the request's reply handle and
// why its caller stopped waiting.
func AppendCancel(b []byte, handle []byte, why Code) []byte {
	b = append(b, handle...)
	return binary.LittleEndian.AppendUint32(b, uint32(why))
}

// DecodeCancel splits a MsgCancel body. The handle is a view of body.
func DecodeCancel(body []byte) (handle []byte, why Code, err error) {
	if len(body) != CancelSize {
		return nil, 0, ErrBadMsg
	}
	return body[:ReplyHandleSize], Code(binary.LittleEndian.Uint32(body[ReplyHandleSize:])), nil
}

// CutDest splits a client's bus frame body into its destination and
// payload.
func CutDest(body []byte) (dest, payload []byte, err error) {
	dest, payload, ok := cutName(body)
	if !ok {
		return nil, nil, ErrBadMsg
	}
	return dest, payload, nil
}

func cutName(b []byte) (name, rest []byte, ok bool) {
	if len(b) < 1 || len(b)-1 < int(b[0]) {
		return nil, nil, false
	}
	n := int(b[0])
	return b[1 : 1+n], b[1+n:], true
}

// ErrBadMsg is the error of a bus message or frame body cut short.
var ErrBadMsg = errors.New("switchboard: truncated bus message")
