package switchboard

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkRequestInProcess: a peer request through a node in this
// process (client A → node → client B's handler → node → A), 64 B, against
// a plain call to a node service on the same node: the difference is the
// cost of the extra hops of the bus.
func BenchmarkRequestInProcess(b *testing.B) {
	var nopts []NodeOption
	var copts []DialOption
	if benchSpin > 0 {
		nopts = append(nopts, WithSpin(benchSpin))
		copts = append(copts, WithSpin(benchSpin))
	}
	n := startNode(b, nopts...)
	echoService(n)
	srv := dial(b, n, append(copts, WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return r.Payload, nil }))...)
	c := dial(b, n, copts...)
	ctx := context.Background()
	payload := make([]byte, 64)
	for _, bc := range []struct {
		name string
		do   func() error
	}{
		{"call", func() error { _, err := c.Call(ctx, svcEcho, cmdEcho, payload); return err }},
		{"request", func() error { _, err := c.Request(ctx, srv.Address(), payload); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lat := make([]int64, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if err := bc.do(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, int64(time.Since(t0)))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
		})
	}
}

// BenchmarkRequestDirect: a peer request over a direct channel between
// two clients of a node in this process (A → B's handler → A, no node on
// the path), 64 B; inline: WithInlineRequests at B. With -trace, the
// goroutine hand-offs per request can be counted (go tool trace -d=parsed:
// goroutines made runnable per request).
func BenchmarkRequestDirect(b *testing.B) {
	for _, inline := range []bool{false, true} {
		name := "handler"
		if inline {
			name = "inline"
		}
		b.Run(name, func(b *testing.B) {
			var copts []DialOption
			if benchSpin > 0 {
				copts = append(copts, WithSpin(benchSpin))
			}
			n := startNode(b)
			sopts := append(copts, WithDirectPeers(true), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return r.Payload, nil }))
			if inline {
				sopts = append(sopts, WithInlineRequests())
			}
			srv := dial(b, n, sopts...)
			c := dial(b, n, append(copts, WithDirectPeers(true))...)
			ctx := context.Background()
			payload := make([]byte, 64)
			for c.DirectStats().Opened == 0 { // the channel is set up after the first request
				if _, err := c.Request(ctx, srv.Address(), payload); err != nil {
					b.Fatal(err)
				}
				time.Sleep(time.Millisecond)
			}
			before := c.DirectStats().Requests
			lat := make([]int64, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if _, err := c.Request(ctx, srv.Address(), payload); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, int64(time.Since(t0)))
			}
			if got := c.DirectStats().Requests - before; got != uint64(b.N) {
				b.Fatalf("%d of %d requests went direct", got, b.N)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
		})
	}
}

var benchSpin time.Duration
