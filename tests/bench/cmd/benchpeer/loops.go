package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// result is what a client process prints, as one JSON line.
type result struct {
	Ops   int64         `json:"ops"`             // calls, messages received, connections made
	Secs  float64       `json:"secs"`            // the time the ops took
	Bytes int64         `json:"bytes,omitempty"` // payload bytes received
	Lost  int64         `json:"lost,omitempty"`  // messages asked for or sent and never received
	Hist  map[int]int64 `json:"hist,omitempty"`  // latency histogram (see bucket)
	Err   string        `json:"err,omitempty"`
	Note  string        `json:"note,omitempty"`
}

func printResult(r *result) {
	b, _ := json.Marshal(r)
	fmt.Printf("%s\n", b)
	os.Stdout.Sync()
}

// bucket is a latency's histogram bucket: 50 buckets per factor e (2 %
// wide). tests/bench/c/common.h computes the same.
func bucket(d time.Duration) int {
	ns := float64(d.Nanoseconds())
	if ns < 1 {
		ns = 1
	}
	return int(math.Log(ns) * 50)
}

// rpcLoop calls call with a payload of a.size bytes for a.dur and records
// each round trip.
func rpcLoop(ctx context.Context, a *args, call func(ctx context.Context, p []byte) error) (*result, error) {
	p := make([]byte, a.size)
	for i := range p {
		p[i] = byte(i)
	}
	// Warm up: a few calls before the clock starts.
	for range 10 {
		if err := call(ctx, p); err != nil {
			return nil, fmt.Errorf("warm-up call: %w", err)
		}
	}
	if err := waitStart(ctx); err != nil {
		return nil, err
	}
	r := &result{Hist: map[int]int64{}}
	start := time.Now()
	end := start.Add(a.dur)
	t0 := start
	for {
		if err := call(ctx, p); err != nil {
			return r, fmt.Errorf("call %d: %w", r.Ops, err)
		}
		t1 := time.Now()
		r.Hist[bucket(t1.Sub(t0))]++
		r.Ops++
		t0 = t1
		if t1.After(end) {
			break
		}
	}
	r.Secs = t0.Sub(start).Seconds()
	return r, nil
}

// errTimeout is what a receive returns at its deadline.
var errTimeout = errors.New("timed out")

// receiveWindows is the receiving side of a one-way stream with credit:
// ask asks the sender for one more window of a.window messages (it must not
// wait for them); next waits, at most until the deadline given, for one
// message and returns its payload size. Two windows are in flight; after
// a.dur no more are asked for, and what was asked for and never came (5 s
// after the end) is counted as lost.
func receiveWindows(ctx context.Context, a *args, ask func() error, next func(deadline time.Time) (int, error)) (*result, error) {
	r := &result{}
	w := int64(a.window)
	start := time.Now()
	end := start.Add(a.dur)
	var asked int64
	for range 2 {
		if err := ask(); err != nil {
			return nil, fmt.Errorf("ask: %w", err)
		}
		asked += w
	}
	for r.Ops < asked {
		if ctx.Err() != nil {
			break
		}
		n, err := next(end.Add(5 * time.Second))
		if err != nil {
			if errors.Is(err, errTimeout) {
				break
			}
			return r, err
		}
		r.Ops++
		r.Bytes += int64(n)
		if r.Ops%w == 0 && time.Now().Before(end) {
			if err := ask(); err != nil {
				return r, fmt.Errorf("ask: %w", err)
			}
			asked += w
		}
	}
	r.Secs = time.Since(start).Seconds()
	r.Lost = asked - r.Ops
	return r, nil
}

// publishWindows is the publishing side of fan-out with credit: publish
// sends one message to every subscriber; acks carries one value per
// window a subscriber has received in full. Two windows are in flight
// (the slowest subscriber sets the pace). It reports the messages
// published; the subscribers report what they received.
func publishWindows(ctx context.Context, a *args, publish func(p []byte) error, flush func() error, acks <-chan struct{}) (*result, error) {
	subs := int64(a.n)
	w := int64(a.window)
	p := make([]byte, a.size)
	r := &result{}
	var windows, acked int64
	waitAcks := func(want int64, deadline time.Time) error {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		for acked < want {
			select {
			case <-acks:
				acked++
			case <-t.C:
				return errTimeout
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	start := time.Now()
	end := start.Add(a.dur)
	for time.Now().Before(end) {
		if windows >= 2 {
			if err := waitAcks((windows-1)*subs, end.Add(5*time.Second)); err != nil {
				r.Note = fmt.Sprintf("window %d: not acknowledged by every subscriber (%v)", windows-1, err)
				break
			}
		}
		for range w {
			if err := publish(p); err != nil {
				return r, err
			}
			r.Ops++
		}
		if flush != nil {
			if err := flush(); err != nil {
				return r, err
			}
		}
		windows++
	}
	if err := waitAcks(windows*subs, time.Now().Add(5*time.Second)); err != nil && r.Note == "" {
		r.Note = fmt.Sprintf("last windows not acknowledged by every subscriber (%v)", err)
	}
	r.Secs = time.Since(start).Seconds()
	return r, nil
}

// subscriber counts fan-out messages and acknowledges every full window.
// received is called from one goroutine at a time; got may be read from
// any.
type subscriber struct {
	window int64
	got    atomic.Int64
	ack    func() error
}

// received counts one message; it acknowledges a full window.
func (s *subscriber) received() error {
	if s.got.Add(1)%s.window == 0 {
		return s.ack()
	}
	return nil
}

// connectLoop connects and disconnects for a.dur.
func connectLoop(a *args, once func() error) (*result, error) {
	r := &result{}
	start := time.Now()
	end := start.Add(a.dur)
	for time.Now().Before(end) {
		if err := once(); err != nil {
			return r, fmt.Errorf("connection %d: %w", r.Ops, err)
		}
		r.Ops++
	}
	r.Secs = time.Since(start).Seconds()
	return r, nil
}

// holdIdle opens a.n connections with open, says ready, waits, and closes
// them with closeAll.
func holdIdle(ctx context.Context, a *args, open func() (func(), error)) (*result, error) {
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for i := range a.n {
		c, err := open()
		// A Unix socket's listen backlog may be full while the server
		// catches up (connect says EAGAIN): wait for it.
		for try := 0; errors.Is(err, syscall.EAGAIN) && try < 2000; try++ {
			time.Sleep(time.Millisecond)
			c, err = open()
		}
		if err != nil {
			if msg := err.Error(); errors.Is(err, syscall.EMFILE) || strings.Contains(msg, "too many open files") || strings.Contains(msg, "file descriptors") {
				var l syscall.Rlimit
				syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
				return nil, fmt.Errorf("connection %d of %d: %w (out of descriptors: this process's RLIMIT_NOFILE is %d, hard %d; raise the hard limit for %d connections)", i+1, a.n, err, l.Cur, l.Max, a.n)
			}
			return nil, fmt.Errorf("connection %d of %d: %w", i+1, a.n, err)
		}
		closers = append(closers, c)
	}
	ready("")
	holdUntilDone(ctx)
	return &result{Ops: int64(a.n)}, nil
}

// putU32 and getU32 encode the little request headers of the stream peers.
func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func getU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
