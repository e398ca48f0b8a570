package switchboard

import (
	"context"
	"fmt"
	"net"

	"github.com/switchboard-ipc/switchboard/actors/conn"
)

// BuffersHandler is a Handler whose reply may be gathered from parts, as
// a client's CallBuffers gathers its request: the node writes the parts
// into the response ring one after the other, never joining them, and the
// caller receives their concatenation. When a service's handler
// implements it, the node calls ServeIPCBuffers instead of ServeIPC. The
// parts may hold views of the request's Payload, as a Handler's reply may:
// they are copied out before the request's memory is given back.
type BuffersHandler interface {
	Handler
	ServeIPCBuffers(ctx context.Context, r *Request) (net.Buffers, error)
}

// BuffersHandlerFunc adapts a function to BuffersHandler.
type BuffersHandlerFunc func(ctx context.Context, r *Request) (net.Buffers, error)

// ServeIPCBuffers calls f.
func (f BuffersHandlerFunc) ServeIPCBuffers(ctx context.Context, r *Request) (net.Buffers, error) {
	return f(ctx, r)
}

// ServeIPC calls f and joins the parts: the node never calls it, but a
// wrapper that knows only Handler may.
func (f BuffersHandlerFunc) ServeIPC(ctx context.Context, r *Request) ([]byte, error) {
	parts, err := f(ctx, r)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, nil
}

// serveHandler runs h for s.req: its gathered reply if it has one.
func (s *connServer) serveHandler(ctx context.Context, h Handler) conn.Result {
	if bh, ok := h.(BuffersHandler); ok {
		parts, err := bh.ServeIPCBuffers(ctx, &s.req)
		if err != nil || parts == nil {
			return result(nil, err)
		}
		return conn.Result{Parts: parts}
	}
	payload, err := h.ServeIPC(ctx, &s.req)
	return result(payload, err)
}

// SendEventBuffers is SendEvent with the payload gathered from parts,
// written into the ring at once or as room comes (WithEventWait), or
// joined into a copy if it has to wait in the node's queue: the parts may
// be views of the request's Payload. Call it only from the
// handler, before it returns.
func (r *Request) SendEventBuffers(command uint16, parts net.Buffers) {
	if r.NoReply && r.Session == nil {
		return
	}
	r.Session.c.SendEventFromServeParts(r.Service, command, parts)
}

// SendEventBuffers is SendEvent with the payload gathered from parts. The
// parts' bytes are shared, not copied, until the event reaches the ring
// (or waits in the connection's queue, joined into a copy): they must stay
// valid and unchanged until then, as SendEvent's payload. The net.Buffers
// value itself may be reused at once.
func (s *Session) SendEventBuffers(command uint16, parts net.Buffers) {
	s.c.SendEventParts(s.service, command, append([][]byte(nil), parts...))
}

// SendEventBuffers is SendEvent with the payload gathered from parts, on
// the terms of Session.SendEventBuffers.
func (n *Node) SendEventBuffers(id uint64, service, command uint16, parts net.Buffers) error {
	c := n.reg.Lookup(id)
	if c == nil {
		return fmt.Errorf("switchboard: no connection %d", id)
	}
	n.events.Add(1)
	c.SendEventParts(service, command, append([][]byte(nil), parts...))
	return nil
}
