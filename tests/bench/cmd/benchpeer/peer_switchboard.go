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
// bytes from the handler, then replies.

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
	// The bus API (Subscribe/Publish, Request to an address with a
	// client request handler) is being built; these hooks are where
	// the fan-out and peer-to-peer cells go (see sbFanPub below).
	"fanpub":  sbFanPub,
	"fansub":  sbFanSub,
	"p2p":     sbP2P,
	"p2presp": sbP2PResponder,
}

func sbServe(ctx context.Context, a *args) (*result, error) {
	path := filepath.Join(a.dir, "switchboard.sock")
	n, err := switchboard.NewNode(switchboard.WithSocketPath(path))
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
			p := make([]byte, size) // the node copies it into the ring
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

func sbDial(ctx context.Context, a *args) (*switchboard.Conn, error) {
	opts := []switchboard.DialOption{switchboard.WithSocket(a.addr)}
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
		r, err := c.Call(ctx, sbService, sbEcho, p)
		if err == nil && len(r) != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), len(r))
		}
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
	callErr := make(chan error, 64)
	r, err := receiveWindows(ctx, a,
		func() error {
			go func() { // the reply comes after the window's events: don't wait for it here
				_, err := c.Call(ctx, sbService, sbEmit, req)
				if err != nil {
					callErr <- err
				}
			}()
			return nil
		},
		func(deadline time.Time) (int, error) {
			dctx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			select {
			case err := <-callErr:
				return 0, err
			default:
			}
			e, err := c.RecvEvent(dctx)
			if err != nil {
				if dctx.Err() != nil && ctx.Err() == nil {
					return 0, errTimeout
				}
				return 0, err
			}
			n := len(e.Payload)
			e.Release()
			return n, nil
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

// sbFanPub is the fan-out publisher hook. With the bus API it becomes:
//
//	c := sbDial(…); acks := make(chan struct{}, 1024)
//	c.Subscribe(ctx, "bench.ack", handler sending on acks)
//	return publishWindows(ctx, a, func(p []byte) error { return c.Publish(ctx, "bench.fan", p) }, nil, acks)
//
// and benchrun's switchboard peer lists "fanout" as supported.
func sbFanPub(ctx context.Context, a *args) (*result, error) { return nil, errPending }

// sbFanSub is the fan-out subscriber hook: Subscribe to "bench.fan", count
// with a subscriber{} whose ack publishes to "bench.ack", and report
// subscriber.got when ctx ends (see natsFanSub).
func sbFanSub(ctx context.Context, a *args) (*result, error) { return nil, errPending }

// sbP2P is the peer-to-peer requester hook: rpcLoop over
// c.Request(ctx, responderAddress, p), the responder's address read from
// a.addr (benchrun passes what the responder printed after "ready").
func sbP2P(ctx context.Context, a *args) (*result, error) { return nil, errPending }

// sbP2PResponder is the responder hook: Dial with a client request handler
// that echoes, print ready(c.Address()), hold until ctx ends.
func sbP2PResponder(ctx context.Context, a *args) (*result, error) { return nil, errPending }
