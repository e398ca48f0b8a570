package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS: nats-server embedded in a process of its own ("broker", default
// options on a loopback TCP port: NATS has no Unix socket listener), and
// nats.go clients with default options in other processes. There is no
// server-side application in NATS: the RPC rows go through the broker to a
// responder process ("serve"), as a NATS user's requests would.

func init() {
	register("nats", map[string]roleFunc{
		"broker":  natsBroker,
		"serve":   natsResponder,
		"p2presp": natsResponder,
		"rpc":     natsRPC,
		"p2p":     natsRPC,
		"events":  natsEvents,
		"fanpub":  natsFanPub,
		"fansub":  natsFanSub,
		"connect": natsConnect,
		"idle":    natsIdle,
		"xbroker": natsXBroker,
		"xresp":   natsXResponder,
		"xrpc":    natsXRPC,
		"xpub":    natsXPub,
		"xsub":    natsXSub,
	})
}

func natsBroker(ctx context.Context, a *args) (*result, error) {
	s, err := startNATS(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true})
	if err != nil {
		return nil, err
	}
	defer stopNATS(s)
	ready(s.ClientURL())
	<-ctx.Done()
	return nil, nil
}

// startNATS starts a nats-server in this process with o and waits until
// it takes clients; stopNATS stops it and waits.
func startNATS(o *server.Options) (*server.Server, error) {
	s, err := server.NewServer(o)
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		stopNATS(s)
		return nil, errors.New("nats-server not ready after 10 s")
	}
	return s, nil
}

func stopNATS(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// natsResponder echoes requests on "bench.rpc" and answers window
// requests on "bench.win" (body: count, size; reply subject: where to
// send them).
func natsResponder(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if _, err := nc.Subscribe("bench.rpc", func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		return nil, err
	}
	var out []byte
	if _, err := nc.Subscribe("bench.win", func(m *nats.Msg) {
		count, size := int(getU32(m.Data)), int(getU32(m.Data[4:]))
		if cap(out) < size {
			out = make([]byte, size)
		}
		for range count {
			nc.Publish(m.Reply, out[:size])
		}
	}); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	ready(a.addr)
	<-ctx.Done()
	return nil, nil
}

func natsRPC(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	return rpcLoop(ctx, a, func(ctx context.Context, p []byte) error {
		m, err := nc.Request("bench.rpc", p, 5*time.Second)
		if err == nil && len(m.Data) != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), len(m.Data))
		}
		return err
	})
}

func natsEvents(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	req := make([]byte, 8)
	putU32(req, uint32(a.window))
	putU32(req[4:], uint32(a.size))
	r, err := receiveWindows(ctx, a, func() error { return nc.PublishRequest("bench.win", inbox, req) },
		func(deadline time.Time) (int, error) {
			m, err := sub.NextMsg(time.Until(deadline))
			if err == nats.ErrTimeout {
				return 0, errTimeout
			}
			if err != nil {
				return 0, err
			}
			return len(m.Data), nil
		})
	if d, _ := sub.Dropped(); d > 0 && r != nil {
		r.Note = fmt.Sprintf("slow consumer: %d dropped", d)
	}
	return r, err
}

func natsFanPub(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	acks := make(chan struct{}, 1<<16)
	if _, err := nc.Subscribe("bench.ack", func(*nats.Msg) { acks <- struct{}{} }); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	return publishWindows(ctx, a, func(p []byte) error { return nc.Publish("bench.fan", p) }, nc.Flush, acks)
}

func natsFanSub(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	s := &subscriber{window: int64(a.window), ack: func() error { return nc.Publish("bench.ack", nil) }}
	sub, err := nc.Subscribe("bench.fan", func(m *nats.Msg) { s.received() })
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	ready("")
	<-ctx.Done()
	sub.Unsubscribe()
	r := &result{Ops: s.got.Load()}
	if d, _ := sub.Dropped(); d > 0 {
		r.Note = fmt.Sprintf("slow consumer: %d dropped", d)
	}
	return r, nil
}

func natsConnect(ctx context.Context, a *args) (*result, error) {
	return connectLoop(a, func() error {
		nc, err := nats.Connect(a.addr)
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
}

func natsIdle(ctx context.Context, a *args) (*result, error) {
	return holdIdle(ctx, a, func() (func(), error) {
		nc, err := nats.Connect(a.addr)
		if err != nil {
			return nil, err
		}
		return nc.Close, nil
	})
}
