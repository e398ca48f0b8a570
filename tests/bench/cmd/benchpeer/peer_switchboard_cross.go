package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster"
	"github.com/switchboard-ipc/switchboard/shm"
)

// Switchboard across nodes: two embedded nodes (default options, as the
// "serve" node, plus WithFederation: the [cluster] section of cmd/node
// with its defaults, and WithAdaptiveProcs, as cmd/node's procs = "auto"
// with it) linked on loopback, a client on each. A publication
// goes to a group whose one member is on the other node: the publisher's
// node sends it once over the link and the subscriber's node delivers it,
// as a NATS server forwards a publication over a route to the server with
// the interest. The RPC rows use Request to the responder's address.

// sbXNode runs one node of the pair: -name names it, -join is the other
// node's link address (node B; node A joins nobody). Its link listens on
// a free loopback port. It prints "ready SOCKET LINK" once it serves and,
// for node B, once the link to A is up.
func sbXNode(ctx context.Context, a *args) (*result, error) {
	_, set := os.LookupEnv("GOMAXPROCS")
	adaptive := !set // as cmd/node's procs = "auto" with [cluster] on
	if v := os.Getenv("BENCHPEER_NODE_PROCS"); v != "" {
		adaptive = false
		// GOMAXPROCS for the nodes alone (the environment's GOMAXPROCS
		// sets it for every process of the run, the other peers' too).
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			return nil, fmt.Errorf("BENCHPEER_NODE_PROCS=%q: want a number of Ps, 1 or more", v)
		}
		runtime.GOMAXPROCS(k)
	}
	if dir := os.Getenv("BENCHPEER_NODE_CPUPROFILE"); dir != "" {
		// A CPU profile of the node, for reading where a crossing's
		// time goes: DIR/node-NAME.prof.
		f, err := os.Create(filepath.Join(dir, "node-"+a.name+".prof"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	if dir := os.Getenv("BENCHPEER_NODE_WAITS"); dir != "" {
		// The node's doorbell counters (rings, sleeps, re-checks),
		// written as it stops: DIR/node-NAME.waits.
		defer func() {
			line := fmt.Sprintf("%+v\nprocs %+v\n", shm.ReadWaitCounts(), shm.ReadProcsState())
			if err := os.WriteFile(filepath.Join(dir, "node-"+a.name+".waits"), []byte(line), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "BENCHPEER_NODE_WAITS:", err)
			}
		}()
	}
	if dir := os.Getenv("BENCHPEER_NODE_TRACE"); dir != "" {
		// An execution trace of the node: DIR/node-NAME.trace.
		f, err := os.Create(filepath.Join(dir, "node-"+a.name+".trace"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return nil, err
		}
		defer trace.Stop()
	}
	link, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	// Without TLS a node requires the cluster's secret: both nodes of the
	// pair read the same file in the harness's private directory.
	secret := filepath.Join(a.dir, "switchboard-cluster.secret")
	if _, err := os.Stat(secret); err != nil {
		if err := os.WriteFile(secret, []byte("the benchmark cluster's secret\n"), 0o600); err != nil {
			return nil, err
		}
	}
	cfg := cluster.Config{Cluster: "bench", Listen: link, SecretFile: secret}
	if a.join != "" {
		cfg.Peers = []string{a.join}
	}
	fed, err := cluster.New(cfg)
	if err != nil {
		return nil, err
	}
	defer fed.Close()
	path := filepath.Join(a.dir, "switchboard-"+a.name+".sock")
	opts := []switchboard.NodeOption{switchboard.WithSocket(path), switchboard.WithNodeName(a.name), switchboard.WithFederation(fed)}
	if adaptive {
		opts = append(opts, switchboard.WithAdaptiveProcs())
	}
	n, err := switchboard.NewNode(opts...)
	if err != nil {
		return nil, err
	}
	if err := n.Listen(); err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(ctx) }()
	if a.join != "" {
		deadline := time.Now().Add(20 * time.Second)
		for n.FederationStats().Nodes < 1 {
			select {
			case err := <-served:
				return nil, fmt.Errorf("node stopped before its link was up: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return nil, errors.New("link to the other node not up after 20 s")
			}
		}
	}
	ready(path + " " + link)
	err = <-served
	if dir := os.Getenv("BENCHPEER_NODE_CPUPROFILE"); dir != "" {
		// And the link's figures: DIR/node-NAME.link.
		s := fed.Stats()
		var sent, delivered uint64
		for _, l := range s.Links {
			sent, delivered = sent+l.Sent, delivered+l.Delivered
		}
		os.WriteFile(filepath.Join(dir, "node-"+a.name+".link"), fmt.Appendf(nil, "sent %d delivered %d batches %d acks %d\n", sent, delivered, s.Batches, s.Acks), 0o644)
	}
	st := n.FederationStats()
	if st.SendFails > 0 || st.Malformed > 0 {
		// A refusal loses a message, which the subscriber's sequence
		// check reports; this says why, in the node's stderr.
		fmt.Fprintf(os.Stderr, "link: %+v\n", st)
	}
	if err != nil && ctx.Err() == nil {
		return nil, err
	}
	return nil, nil
}

// sbXResponder answers requests with their payload (inline: the payload
// is a view).
func sbXResponder(ctx context.Context, a *args) (*result, error) {
	c, err := sbDial(ctx, a, switchboard.WithInlineRequests(),
		switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
			return append([]byte(nil), r.Payload...), nil
		}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ready(c.Address())
	<-ctx.Done()
	return nil, nil
}

// sbXRPC requests the responder's address on the other node.
func sbXRPC(ctx context.Context, a *args) (*result, error) {
	c, err := sbDial(ctx, a)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	call := func(ctx context.Context, p []byte) error {
		r, err := c.Request(ctx, a.target, p)
		if err == nil && len(r) != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), len(r))
		}
		return err
	}
	if err := untilOK(ctx, "first request across the link", func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return call(cctx, make([]byte, a.size))
	}); err != nil {
		return nil, err
	}
	return rpcLoop(ctx, a, call)
}

// sbXPub publishes to "bench.xfan", whose member is on the other node,
// once the publisher's node knows of it; the subscriber acknowledges
// windows on "bench.xack".
func sbXPub(ctx context.Context, a *args) (*result, error) {
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
	if err := c.Subscribe(ctx, "bench.xack"); err != nil {
		return nil, err
	}
	if err := untilOK(ctx, "the subscriber on the other node", func() error {
		ms, err := c.Members(ctx, "bench.xfan")
		if err == nil && len(ms) != a.n {
			err = fmt.Errorf("%d members of bench.xfan, want %d", len(ms), a.n)
		}
		return err
	}); err != nil {
		return nil, err
	}
	return publishWindows(ctx, a, stamped(func(p []byte) error { return c.Publish(ctx, "bench.xfan", p) }), nil, acks)
}

// sbXSub subscribes to "bench.xfan" and checks the sequence.
func sbXSub(ctx context.Context, a *args) (*result, error) {
	s := &seqSubscriber{subscriber: subscriber{window: int64(a.window)}}
	c, err := sbDial(ctx, a, switchboard.WithEventHandler(func(e switchboard.Event) {
		if e.Kind == switchboard.EventGroup {
			s.receivedSeq(e.Payload)
		}
	}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	s.ack = func() error { return c.Publish(ctx, "bench.xack", nil) }
	if err := c.Subscribe(ctx, "bench.xfan"); err != nil {
		return nil, err
	}
	ready("")
	<-ctx.Done()
	r, err := s.report()
	if d := c.FlowControl().EventsDropped; d > 0 {
		r.Note = fmt.Sprintf("node dropped %d messages", d)
	}
	return r, err
}
