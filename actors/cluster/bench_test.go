package cluster

import (
	"fmt"
	"testing"
	"time"
)

// The link's one-way throughput, node process to node process on loopback
// in a private network namespace (as root): b.N messages of one size from
// n1's Send to n2's host, in order, counted by n2. Each run starts two
// nodes; the clock runs from the first Send to n2's count reaching b.N
// (polled every 20 ms, so use b.N large enough: -benchtime 200000x).
// The benchmark runs again in a child process in its namespace: the
// first line printed times that whole child; the indented line under
// "--- BENCH" is the measurement.
func BenchmarkLinkOneWay64B(b *testing.B)   { benchLink(b, 64) }
func BenchmarkLinkOneWay64KiB(b *testing.B) { benchLink(b, 64<<10) }

func benchLink(b *testing.B, size int) {
	if !inNetns(b) {
		return
	}
	n1, n2 := startTwo(b, memberOpts{}, memberOpts{})
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	// Send refuses past the budget: resend what it refused until all went.
	sent := 0
	for sent < b.N {
		var ok, refused int
		fmt.Sscan(n1.do("send", "n2", b.N-sent, size), &ok, &refused)
		sent += ok
		if refused > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	waitCount(b, n2, "n1", b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkLinkRoundTrip: one 64 B message at a time from n1's Send to
// n2's host, which sends it back, to n1's host; n1 times each round trip
// and reports the median (rtt-p50-µs). As BenchmarkLinkOneWay, in a
// private network namespace (as root).
func BenchmarkLinkRoundTrip(b *testing.B) {
	if !inNetns(b) {
		return
	}
	n1, _ := startTwo(b, memberOpts{}, memberOpts{})
	b.ResetTimer()
	var ns int64
	fmt.Sscan(n1.do("ping", "n2", b.N, 64), &ns)
	b.StopTimer()
	if ns == 0 {
		b.Fatal("no round trip completed")
	}
	b.ReportMetric(float64(ns)/1e3, "rtt-p50-µs")
}
