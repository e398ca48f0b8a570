package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Switchboard: an embedded node (default options) serving service 7:
// command 1 echoes, command 2 (count, size) sends count events of size
// bytes from the handler.
//
// How the loops use the public API, as a throughput-minded user would:
// the echo handler returns the request's Payload (the node copies it into
// the response ring once); RPC callers use CallView and Release (the
// reply read in place, or a copy from a pool, instead of a new slice per
// call); the emitting handler uses Request.SendEvent, which writes each
// event into the client's event ring and, when the ring is full, waits
// for the client to make room (WithEventWait, default 10ms) instead of
// copying the event into the node's queue: one copy per event, from one
// payload buffer per connection, as libqb's qb_ipcs_event_send from its
// static buffer. The events receiver asks for each window with Send, a
// message without a reply, as the Unix socket, shmipc-go and bare shm
// receivers ask for theirs (libqb's API has only requests with replies),
// and takes the events with RecvEvents. Ring sizes are the defaults
// (1 MiB each; the libqb clients ask for a 1 MiB max_msg_size).

const (
	sbService uint16 = 7
	sbEcho    uint16 = 1
	sbEmit    uint16 = 2
)

func init() {
	// switchboard-socket is the same, its clients dialing with
	// -transport socket (frames over the Unix socket, no shared memory).
	register("switchboard", sbRoles)
	register("switchboard-socket", sbRoles)
}

var sbRoles = map[string]roleFunc{
	"serve":   sbServe,
	"rpc":     sbRPC,
	"events":  sbEvents,
	"connect": sbConnect,
	"idle":    sbIdle,
	"fanpub":  sbFanPub,
	"fansub":  sbFanSub,
	"p2p":     sbP2P,
	"p2presp": sbP2PResponder,
	"xnode":   sbXNode,
	"xresp":   sbXResponder,
	"xrpc":    sbXRPC,
	"xpub":    sbXPub,
	"xsub":    sbXSub,
}

func sbServe(ctx context.Context, a *args) (*result, error) {
	path := filepath.Join(a.dir, "switchboard.sock")
	n, err := switchboard.NewNode(switchboard.WithSocket(path))
	if err != nil {
		return nil, err
	}
	n.HandleFunc(sbService, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		switch r.Command {
		case sbEcho:
			return r.Payload, nil
		case sbEmit:
			if len(r.Payload) < 8 {
				return nil, fmt.Errorf("emit: short request")
			}
			count, size := int(getU32(r.Payload)), int(getU32(r.Payload[4:]))
			// One payload buffer per connection, kept in its session, as
			// the other servers keep theirs: each event copies it into
			// the ring, waiting for room.
			p, _ := r.Session.Data.([]byte)
			if len(p) < size {
				p = make([]byte, size)
				r.Session.Data = p
			}
			p = p[:size]
			for range count {
				r.SendEvent(1, p)
			}
			return nil, nil
		}
		return nil, switchboard.ErrUnknownCommand
	})
	if err := n.Listen(); err != nil {
		return nil, err
	}
	ready(path)
	if err := n.Serve(ctx); err != nil && ctx.Err() == nil {
		return nil, err
	}
	return nil, nil
}

func sbDial(ctx context.Context, a *args, more ...switchboard.DialOption) (*switchboard.Conn, error) {
	opts := append([]switchboard.DialOption{switchboard.WithSocket(a.addr)}, more...)
	if a.transport == "socket" {
		opts = append(opts, switchboard.WithTransport(switchboard.TransportSocket))
	}
	return switchboard.Dial(ctx, opts...)
}

func sbRPC(ctx context.Context, a *args) (*result, error) {
	c, err := sbDial(ctx, a)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return rpcLoop(ctx, a, func(ctx context.Context, p []byte) error {
		r, err := c.CallView(ctx, sbService, sbEcho, p)
		if err != nil {
			return err
		}
		if len(r.Body) != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), len(r.Body))
		}
		r.Release()
		return err
	})
}

func sbEvents(ctx context.Context, a *args) (*result, error) {
	c, err := sbDial(ctx, a)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	req := make([]byte, 8)
	putU32(req, uint32(a.window))
	putU32(req[4:], uint32(a.size))
	batch := make([]switchboard.Event, 256)
	var next, have int // batch[next:have] are still to count
	var dctx context.Context
	var dcancel context.CancelFunc
	var dctxDeadline time.Time
	defer func() {
		if dcancel != nil {
			dcancel()
		}
	}()
	r, err := receiveWindows(ctx, a,
		func() error { return c.Send(ctx, sbService, sbEmit, req) },
		func(deadline time.Time) (int, error) {
			// The deadline is the same for every event of the run: one
			// context for all of them (a context per event costs more
			// than the event).
			if dctx == nil || !deadline.Equal(dctxDeadline) {
				if dcancel != nil {
					dcancel()
				}
				dctx, dcancel = context.WithDeadline(ctx, deadline)
				dctxDeadline = deadline
			}
			// Events are taken in batches with RecvEvents, as a user
			// after throughput would: the receiver reads the event ring
			// itself, copying each payload into the slot's buffer, reused
			// from batch to batch.
			if next == have {
				k, err := c.RecvEvents(dctx, batch)
				if err != nil {
					if dctx.Err() != nil && ctx.Err() == nil {
						return 0, errTimeout
					}
					return 0, err
				}
				next, have = 0, k
			}
			next++
			return len(batch[next-1].Payload), nil
		})
	if r != nil {
		if d := c.FlowControl().EventsDropped; d > 0 {
			r.Note = fmt.Sprintf("node dropped %d events", d)
		}
	}
	return r, err
}

func sbConnect(ctx context.Context, a *args) (*result, error) {
	return connectLoop(a, func() error {
		c, err := sbDial(ctx, a)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func sbIdle(ctx context.Context, a *args) (*result, error) {
	return holdIdle(ctx, a, func() (func(), error) {
		c, err := sbDial(ctx, a)
		if err != nil {
			return nil, err
		}
		return func() { c.Close() }, nil
	})
}

// sbFanPub publishes to the group "bench.fan"; subscribers acknowledge
// windows by publishing to "bench.ack", as in the NATS peer.
func sbFanPub(ctx context.Context, a *args) (*result, error) {
	acks := make(chan struct{}, 1<<16)
	c, err := sbDial(ctx, a, switchboard.WithEventHandler(func(e switchboard.Event) {
		if e.Kind == switchboard.EventGroup {
			acks <- struct{}{}
		}
	}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "bench.ack"); err != nil {
		return nil, err
	}
	return publishWindows(ctx, a, func(p []byte) error { return c.Publish(ctx, "bench.fan", p) }, nil, acks)
}

// sbFanSub subscribes to "bench.fan" and counts; its acknowledgements go
// to "bench.ack".
func sbFanSub(ctx context.Context, a *args) (*result, error) {
	var s *subscriber
	c, err := sbDial(ctx, a, switchboard.WithEventHandler(func(e switchboard.Event) {
		if e.Kind == switchboard.EventGroup {
			s.received()
		}
	}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	s = &subscriber{window: int64(a.window), ack: func() error { return c.Publish(ctx, "bench.ack", nil) }}
	if err := c.Subscribe(ctx, "bench.fan"); err != nil {
		return nil, err
	}
	ready("")
	<-ctx.Done()
	r := &result{Ops: s.got.Load()}
	if d := c.FlowControl().EventsDropped; d > 0 {
		r.Note = fmt.Sprintf("node dropped %d messages", d)
	}
	return r, nil
}

// sbP2P requests the responder's address: over a direct channel the node
// brokers after the first request (WithDirectPeers on both ends).
func sbP2P(ctx context.Context, a *args) (*result, error) {
	c, err := sbDial(ctx, a, switchboard.WithDirectPeers(true))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := rpcLoop(ctx, a, func(ctx context.Context, p []byte) error {
		r, err := c.Request(ctx, a.target, p)
		if err == nil && len(r) != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), len(r))
		}
		return err
	})
	if st := c.DirectStats(); r != nil && int64(st.Requests) < r.Ops { // the row must say if it was not what it claims
		r.Note = fmt.Sprintf("only %d of the %d timed requests went over a direct channel", st.Requests, r.Ops)
	}
	return r, err
}

// sbP2PResponder answers requests from peers with their payload.
func sbP2PResponder(ctx context.Context, a *args) (*result, error) {
	c, err := sbDial(ctx, a, switchboard.WithDirectPeers(true), switchboard.WithInlineRequests(), // the handler runs where the request is read
		switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
			return append([]byte(nil), r.Payload...), nil // inline, the payload is a view
		}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ready(c.Address())
	<-ctx.Done()
	return nil, nil
}
