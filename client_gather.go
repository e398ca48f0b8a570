package switchboard

import (
	"context"
	"net"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Gathered sends (coroipc's iovec sends, libqb's qb_ipcc_sendv): each
// method below is its single-buffer sibling with the payload given as
// parts, whose concatenation is the payload. The parts are copied into the
// ring one after the other, each frame (or chunk of a large message) taking
// the pieces it spans: nothing joins them first, and the receiver sees
// exactly what the single-buffer method would have sent with the parts
// joined. Empty parts are allowed. The limit (MaxMessage) is on the total.
// The parts are read before the method returns; they are not modified, and
// the net.Buffers value itself is not consumed (unlike net.Buffers.WriteTo).

// CallBuffers is Call with the payload gathered from parts.
func (c *Conn) CallBuffers(ctx context.Context, service, command uint16, parts net.Buffers) ([]byte, error) {
	id, cl, err := c.startCall(ctx, service, command, parts...)
	if err != nil {
		return nil, err
	}
	c.lead(cl)
	return c.finishCall(ctx, id, cl)
}

// SendBuffers is Send with the payload gathered from parts.
func (c *Conn) SendBuffers(ctx context.Context, service, command uint16, parts net.Buffers) error {
	return c.send(ctx, service, command, parts)
}

// SendToBuffers is SendTo with the payload gathered from parts.
func (c *Conn) SendToBuffers(ctx context.Context, to string, parts net.Buffers, opts ...MsgOption) error {
	return c.sendMsg(ctx, pb.KindPeerSend, to, parts, opts)
}

// PublishBuffers is Publish with the payload gathered from parts.
func (c *Conn) PublishBuffers(ctx context.Context, group string, parts net.Buffers, opts ...MsgOption) error {
	return c.sendMsg(ctx, pb.KindPublish, group, parts, opts)
}

// RequestBuffers is Request with the payload gathered from parts.
func (c *Conn) RequestBuffers(ctx context.Context, to string, parts net.Buffers) ([]byte, error) {
	id, cl, ch, err := c.startRequest(ctx, to, parts)
	if err != nil {
		return nil, err
	}
	if ch != nil {
		return c.directWait(ctx, ch, id, cl) // client_direct_wait.go
	}
	c.lead(cl)
	return c.finishCall(ctx, id, cl)
}

// RequestGroupBuffers is RequestGroup with the payload gathered from
// parts.
func (c *Conn) RequestGroupBuffers(ctx context.Context, group string, parts net.Buffers) ([]GroupResult, error) {
	return c.requestGroup(ctx, group, parts)
}

// partsLen is the length of the concatenation of parts.
func partsLen(parts [][]byte) int {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	return n
}

// gather returns prefix followed by parts, in buf while they fit (so that
// a message of a few parts costs no allocation).
func gather(buf *[8][]byte, prefix []byte, parts [][]byte) [][]byte {
	return append(append(buf[:0], prefix), parts...)
}
