package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func hist(ns ...int64) map[int]int64 {
	h := map[int]int64{}
	for _, n := range ns {
		h[int(math.Log(float64(n))*50)]++
	}
	return h
}

func TestPercentile(t *testing.T) {
	var ns []int64
	for i := int64(1); i <= 100; i++ {
		ns = append(ns, i*1000) // 1 µs … 100 µs
	}
	h := hist(ns...)
	for _, tc := range []struct {
		q    float64
		want float64
	}{{0.5, 50e3}, {0.99, 99e3}, {1, 100e3}} {
		got := percentile(h, tc.q)
		if math.Abs(got-tc.want)/tc.want > 0.02 { // a bucket is 2 % wide
			t.Errorf("percentile(%v) = %v, want %v within 2 %%", tc.q, got, tc.want)
		}
	}
	if !math.IsNaN(percentile(map[int]int64{}, 0.5)) {
		t.Error("percentile of an empty histogram is not NaN")
	}
}

func TestMeasure(t *testing.T) {
	rpc := workloadByKey("rpc-64-8")
	s := rpc.measure([]*result{
		{Ops: 1000, Secs: 1, Hist: hist(10e3, 10e3)},
		{Ops: 3000, Secs: 2, Hist: hist(10e3, 20e3)},
	})
	if got := s.Values["calls_s"]; got != 2500 {
		t.Errorf("calls/s = %v, want 2500 (the clients' rates summed)", got)
	}
	fan := workloadByKey("fanout-4")
	s = fan.measure([]*result{{Ops: 1000, Secs: 0.5}, {Ops: 1000}, {Ops: 1000}, {Ops: 990}, {Ops: 1000}})
	if s.Lost != 10 {
		t.Errorf("fan-out lost %d, want 10", s.Lost)
	}
	if got := s.Values["msgs_s"]; got != 3990/0.5 {
		t.Errorf("fan-out delivered %v/s, want %v", got, 3990/0.5)
	}
	ev := workloadByKey("events-64")
	s = ev.measure([]*result{{Ops: 100, Secs: 1, Bytes: 6400, Lost: 3, Note: "node dropped 3 events"}})
	if s.Lost != 3 || len(s.Notes) != 1 {
		t.Errorf("events: lost %d notes %q, want 3 and the note", s.Lost, s.Notes)
	}
}

func TestCellSummaryAndText(t *testing.T) {
	c := &cell{Workload: "events-64", Peer: "nats", Samples: []*sample{
		{Values: map[string]float64{"msgs_s": 100e3}},
		{Values: map[string]float64{"msgs_s": 150e3}, Lost: 2},
		{Values: map[string]float64{"msgs_s": 110e3}},
	}}
	c.summarize()
	st := c.Stats["msgs_s"]
	if st.Median != 110e3 || st.Min != 100e3 || st.Max != 150e3 || !st.Noisy {
		t.Errorf("stat = %+v, want median 110k, 100k–150k, noisy", st)
	}
	base := &cell{Workload: "events-64", Peer: "switchboard", Samples: []*sample{{Values: map[string]float64{"msgs_s": 220e3}}}}
	base.summarize()
	got := cellText(c, base, mMsgs, true)
	for _, want := range []string{"110 (100–150)", "×0.50", "†", "**lost 2**"} {
		if !strings.Contains(got, want) {
			t.Errorf("cell text %q lacks %q", got, want)
		}
	}
	if got := cellText(&cell{Status: "n/a (pending)"}, base, mMsgs, true); got != "n/a (pending)" {
		t.Errorf("status cell = %q", got)
	}
}

func TestMarkdownAndCharts(t *testing.T) {
	r := &report{
		Machine:  map[string]string{"nproc": "2"},
		Versions: map[string]string{"go": "go1.26"},
		Config:   runConfig{Duration: time.Second.String(), Reps: 3},
		Peers:    []peerInfo{{"switchboard", "Switchboard"}, {"unix", "Unix socket"}},
	}
	for _, p := range []string{"switchboard", "unix"} {
		c := &cell{Workload: "rpc-64-1", Peer: p, Samples: []*sample{{Values: map[string]float64{
			"p50_us": 10, "p90_us": 20, "p99_us": 30, "calls_s": 1e5}}}}
		c.summarize()
		r.Cells = append(r.Cells, c)
	}
	r.Cells = append(r.Cells, &cell{Workload: "fanout-4", Peer: "switchboard", Status: pending},
		&cell{Workload: "fanout-4", Peer: "unix", Status: noBroker})
	md := r.markdown()
	for _, want := range []string{"| RPC 64 B, 1 client | p50 (µs) | 10.0 | 10.0 ×1.00 |", "n/a (pending)", "Machine: nproc 2"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	svg := r.latencyChart()
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<rect x=") < 6 {
		t.Errorf("latency chart has no bars:\n%s", svg)
	}
	if svg := r.throughputChart(); !strings.Contains(svg, "</svg>") {
		t.Errorf("throughput chart is not an SVG:\n%s", svg)
	}
}
