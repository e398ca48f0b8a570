package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS across servers: two nats-server processes joined by a route (the
// -cluster and -routes of nats-server's command line: a cluster listener
// on a random loopback port each, and node B's route to node A's), default
// options otherwise, a nats.go client on each.

// natsXBroker runs one server of the pair: -join is the other server's
// route URL (server B). It prints "ready CLIENT-URL ROUTE-URL" once it
// accepts clients and, for server B, once the route is up.
func natsXBroker(ctx context.Context, a *args) (*result, error) {
	o := &server.Options{ServerName: a.name, Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: server.RANDOM_PORT}}
	if a.join != "" {
		u, err := url.Parse(a.join)
		if err != nil {
			return nil, fmt.Errorf("-join: %w", err)
		}
		o.Routes = []*url.URL{u}
	}
	s, err := startNATS(o)
	if err != nil {
		return nil, err
	}
	defer stopNATS(s)
	if a.join != "" {
		deadline := time.Now().Add(20 * time.Second)
		for s.NumRoutes() < 1 {
			if time.Now().After(deadline) {
				return nil, errors.New("route to the other server not up after 20 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ca := s.ClusterAddr()
	if ca == nil {
		return nil, errors.New("nats-server has no cluster listener")
	}
	ready(fmt.Sprintf("%s nats-route://%s", s.ClientURL(), ca))
	<-ctx.Done()
	return nil, nil
}

// natsXResponder echoes requests on "bench.xrpc".
func natsXResponder(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if _, err := nc.Subscribe("bench.xrpc", func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	ready(a.addr)
	<-ctx.Done()
	return nil, nil
}

// natsXRPC requests "bench.xrpc" once the route carries the responder's
// interest (until then, a request finds no responders).
func natsXRPC(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	call := func(_ context.Context, p []byte) error {
		m, err := nc.Request("bench.xrpc", p, 5*time.Second)
		if err == nil && len(m.Data) != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), len(m.Data))
		}
		return err
	}
	if err := untilOK(ctx, "first request across the route", func() error {
		_, err := nc.Request("bench.xrpc", make([]byte, a.size), time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	return rpcLoop(ctx, a, call)
}

// natsXPub publishes to "bench.xfan" once a request to the subscriber
// ("bench.xhello") is answered: the route then carries its interest, and
// the subscriber's server knows of "bench.xack", subscribed before.
func natsXPub(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	acks := make(chan struct{}, 1<<16)
	if _, err := nc.Subscribe("bench.xack", func(*nats.Msg) { acks <- struct{}{} }); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	if err := untilOK(ctx, "the subscriber on the other server", func() error {
		_, err := nc.Request("bench.xhello", nil, 200*time.Millisecond)
		return err
	}); err != nil {
		return nil, err
	}
	return publishWindows(ctx, a, stamped(func(p []byte) error { return nc.Publish("bench.xfan", p) }), nc.Flush, acks)
}

// natsXSub subscribes to "bench.xfan" and checks the sequence; it answers
// "bench.xhello" (subscribed after "bench.xfan", on the same connection:
// an answer means the route carries both).
func natsXSub(ctx context.Context, a *args) (*result, error) {
	nc, err := nats.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	s := &seqSubscriber{subscriber: subscriber{window: int64(a.window), ack: func() error { return nc.Publish("bench.xack", nil) }}}
	sub, err := nc.Subscribe("bench.xfan", func(m *nats.Msg) { s.receivedSeq(m.Data) })
	if err != nil {
		return nil, err
	}
	if _, err := nc.Subscribe("bench.xhello", func(m *nats.Msg) { m.Respond(nil) }); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	ready("")
	<-ctx.Done()
	sub.Unsubscribe()
	r, err := s.report()
	if d, _ := sub.Dropped(); d > 0 {
		r.Note = fmt.Sprintf("slow consumer: %d dropped", d)
	}
	return r, err
}
