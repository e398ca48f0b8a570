package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// The cross-node rows (x-rpc-64, x-events-64, x-events-64k): two nodes of
// one system linked on loopback (roles xnode for Switchboard, xbroker for
// NATS), a client on each. x-rpc: a responder (xresp) on node B, a
// requester (xrpc) on node A. x-events: a subscriber (xsub) on node B, a
// publisher (xpub) on node A; every message carries its sequence number in
// its first 8 bytes, and the subscriber checks that each is the one after
// the last (nothing lost, nothing reordered, nothing twice).

// freeLoopbackPort returns a loopback TCP address the kernel says is free
// now (it is released for the caller to listen on).
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// stamped wraps publish: each payload gets the next sequence number in its
// first 8 bytes before it goes.
func stamped(publish func(p []byte) error) func(p []byte) error {
	var seq uint64
	return func(p []byte) error {
		binary.LittleEndian.PutUint64(p, seq)
		seq++
		return publish(p)
	}
}

// seqSubscriber is a subscriber that checks the sequence numbers.
// received is called from one goroutine at a time.
type seqSubscriber struct {
	subscriber
	next    uint64
	bad     atomic.Int64
	firstAt atomic.Value // string: the first break, for the error
	bytes   atomic.Int64
}

func (s *seqSubscriber) receivedSeq(p []byte) error {
	if len(p) < 8 {
		s.fault(fmt.Sprintf("message %d: %d bytes, want at least 8", s.next, len(p)))
	} else if got := binary.LittleEndian.Uint64(p); got != s.next {
		s.fault(fmt.Sprintf("message %d carries sequence number %d", s.next, got))
		s.next = got // resynchronise: count each break once
	}
	s.next++
	s.bytes.Add(int64(len(p)))
	return s.received()
}

func (s *seqSubscriber) fault(what string) {
	if s.bad.Add(1) == 1 {
		s.firstAt.Store(what)
	}
}

// report is the subscriber's result once benchrun says done: an error if
// any message came out of order.
func (s *seqSubscriber) report() (*result, error) {
	r := &result{Ops: s.got.Load(), Bytes: s.bytes.Load()}
	if n := s.bad.Load(); n > 0 {
		return r, fmt.Errorf("%d sequence break(s), the first: %s", n, s.firstAt.Load())
	}
	return r, nil
}

// untilOK retries f (a first call across a link that may still be
// learning of the other side's interest) for up to 20 s.
func untilOK(ctx context.Context, what string, f func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
