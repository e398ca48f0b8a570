package main

import (
	"math"
	"slices"
)

const (
	kindRPC     = "rpc"
	kindEvents  = "events"
	kindFanout  = "fanout"
	kindP2P     = "p2p"
	kindConnect = "connect"
	kindIdle    = "idle"
	// kindIdleMany is kindIdle with the workload's own (large) number of
	// connections, run on the peers that hold them cheaply.
	kindIdleMany = "idle-many"
	// kindXRPC and kindXEvents run across two linked nodes (a cluster of
	// two servers): RPC from a client of node A to a responder on node B,
	// and one-way publications from A to a subscriber on B.
	kindXRPC    = "x-rpc"
	kindXEvents = "x-events"
)

// cross says whether the kind runs across two linked nodes.
func cross(kind string) bool { return kind == kindXRPC || kind == kindXEvents }

// workload is one row group of the table.
type workload struct {
	key, title string
	kind       string
	size       int // payload bytes
	clients    int // client processes (rpc), subscribers (fan-out)
	metrics    []metric
}

// metric is one number a workload reports.
type metric struct {
	key, label, unit string
	lowerBetter      bool
	scale            float64 // displayed = value × scale
}

var (
	mP50   = metric{key: "p50_us", label: "p50", unit: "µs", lowerBetter: true, scale: 1}
	mP99   = metric{key: "p99_us", label: "p99", unit: "µs", lowerBetter: true, scale: 1}
	mCalls = metric{key: "calls_s", label: "calls/s", unit: "k/s", scale: 1e-3}
	mMsgs  = metric{key: "msgs_s", label: "msgs/s", unit: "k/s", scale: 1e-3}
	mGBs   = metric{key: "gb_s", label: "GB/s", unit: "GB/s", scale: 1}
	mConns = metric{key: "conns_s", label: "connections/s", unit: "/s", scale: 1}
	mMem   = metric{key: "kib_per_conn", label: "RSS per idle connection", unit: "KiB", lowerBetter: true, scale: 1}
	mFds   = metric{key: "fds", label: "descriptors held", unit: "count", lowerBetter: true, scale: 1}
)

var allWorkloads = []*workload{
	{key: "rpc-64-1", title: "RPC 64 B, 1 client", kind: kindRPC, size: 64, clients: 1, metrics: []metric{mP50, mP99, mCalls}},
	{key: "rpc-64-8", title: "RPC 64 B, 8 clients", kind: kindRPC, size: 64, clients: 8, metrics: []metric{mP50, mP99, mCalls}},
	{key: "rpc-64k-1", title: "RPC 64 KiB, 1 client", kind: kindRPC, size: 64 << 10, clients: 1, metrics: []metric{mP50, mP99, mCalls}},
	{key: "rpc-64k-8", title: "RPC 64 KiB, 8 clients", kind: kindRPC, size: 64 << 10, clients: 8, metrics: []metric{mP50, mP99, mCalls}},
	{key: "events-64", title: "events 64 B, one way", kind: kindEvents, size: 64, clients: 1, metrics: []metric{mMsgs, mGBs}},
	{key: "events-64k", title: "events 64 KiB, one way", kind: kindEvents, size: 64 << 10, clients: 1, metrics: []metric{mMsgs, mGBs}},
	{key: "fanout-4", title: "fan-out 1→4, 64 B (delivered)", kind: kindFanout, size: 64, clients: 4, metrics: []metric{mMsgs}},
	{key: "fanout-16", title: "fan-out 1→16, 64 B (delivered)", kind: kindFanout, size: 64, clients: 16, metrics: []metric{mMsgs}},
	{key: "p2p-64", title: "peer-to-peer RPC via the broker, 64 B", kind: kindP2P, size: 64, clients: 1, metrics: []metric{mP50, mP99, mCalls}},
	{key: "connect", title: "connect + handshake + disconnect", kind: kindConnect, size: 64, clients: 1, metrics: []metric{mConns}},
	{key: "idle-mem", title: "broker memory, idle connections", kind: kindIdle, clients: 1, metrics: []metric{mMem}},
	{key: "idle-10k", title: "broker memory, 10,000 idle connections", kind: kindIdleMany, clients: 1, metrics: []metric{mMem, mFds}},
	{key: "x-rpc-64", title: "RPC across linked nodes, 64 B", kind: kindXRPC, size: 64, clients: 1, metrics: []metric{mP50, mP99, mCalls}},
	{key: "x-events-64", title: "publications across linked nodes, 64 B, one way", kind: kindXEvents, size: 64, clients: 1, metrics: []metric{mMsgs, mGBs}},
	{key: "x-events-64k", title: "publications across linked nodes, 64 KiB, one way", kind: kindXEvents, size: 64 << 10, clients: 1, metrics: []metric{mMsgs, mGBs}},
}

func workloadByKey(k string) *workload {
	for _, w := range allWorkloads {
		if w.key == k {
			return w
		}
	}
	return nil
}

// idleConns is the number of idle connections the workload opens: -conns,
// or -many for the large row (a smoke run opens few: twice -conns).
func (w *workload) idleConns(c *config) int {
	switch {
	case w.kind != kindIdleMany:
		return c.conns
	case c.smoke:
		return 2 * c.conns
	}
	return c.many
}

// measure turns one repetition's client results into a sample.
func (w *workload) measure(rs []*result) *sample {
	s := &sample{Values: map[string]float64{}}
	for _, r := range rs {
		if r.Note != "" {
			s.Notes = append(s.Notes, r.Note)
		}
	}
	switch w.kind {
	case kindRPC, kindP2P, kindXRPC:
		hist := map[int]int64{}
		var rate float64
		for _, r := range rs {
			for b, n := range r.Hist {
				hist[b] += n
			}
			if r.Secs > 0 {
				rate += float64(r.Ops) / r.Secs
			}
		}
		s.Values["p50_us"] = percentile(hist, 0.50) / 1e3
		s.Values["p90_us"] = percentile(hist, 0.90) / 1e3
		s.Values["p99_us"] = percentile(hist, 0.99) / 1e3
		s.Values["calls_s"] = rate
	case kindEvents:
		r := rs[0]
		if r.Secs > 0 {
			s.Values["msgs_s"] = float64(r.Ops) / r.Secs
			s.Values["gb_s"] = float64(r.Bytes) / r.Secs / 1e9
		}
		s.Lost = r.Lost
	case kindFanout:
		pub := rs[0]
		var got int64
		for _, r := range rs[1:] {
			got += r.Ops
		}
		if pub.Secs > 0 {
			s.Values["msgs_s"] = float64(got) / pub.Secs
		}
		s.Lost = pub.Ops*int64(len(rs)-1) - got
	case kindXEvents:
		pub, sub := rs[0], rs[1]
		if pub.Secs > 0 {
			s.Values["msgs_s"] = float64(sub.Ops) / pub.Secs
			s.Values["gb_s"] = float64(sub.Bytes) / pub.Secs / 1e9
		}
		s.Lost = pub.Ops - sub.Ops
	case kindConnect:
		if r := rs[0]; r.Secs > 0 {
			s.Values["conns_s"] = float64(r.Ops) / r.Secs
		}
	}
	return s
}

// percentile reads the q-quantile from a histogram of bucket(ns) counts
// (50 buckets per factor e; a bucket's value is its geometric middle).
func percentile(hist map[int]int64, q float64) float64 {
	var total int64
	keys := make([]int, 0, len(hist))
	for b, n := range hist {
		keys = append(keys, b)
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	slices.Sort(keys)
	want := int64(math.Ceil(q * float64(total)))
	var seen int64
	for _, b := range keys {
		seen += hist[b]
		if seen >= want {
			return math.Exp((float64(b) + 0.5) / 50)
		}
	}
	return math.Exp((float64(keys[len(keys)-1]) + 0.5) / 50)
}
