package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/switchboard-ipc/switchboard"
)

type fakeStats struct {
	st    switchboard.NodeStats
	conns []switchboard.ConnInfo
}

func (f *fakeStats) Stats() switchboard.NodeStats { return f.st }
func (f *fakeStats) Connections() []switchboard.ConnInfo {
	return append([]switchboard.ConnInfo(nil), f.conns...)
}

// expose gathers m's registry and writes it in the text format.
func expose(t *testing.T, m *metrics) string {
	t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func newTestMetrics(mode string, limit int, src statsSource, now time.Time) *metrics {
	m := newMetrics(MetricsConfig{Connections: mode, ConnectionsLimit: int64(limit)})
	c := &nodeCollector{src: src, mode: mode, limit: limit, clients: m.clients, now: func() time.Time { return now }}
	m.reg.MustRegister(c)
	return m
}

func TestExpositionEscapesLabels(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &fakeStats{
		st: switchboard.NodeStats{Name: "n1", Started: now.Add(-90 * time.Second), Calls: 3,
			Refusals: map[switchboard.Action]uint64{switchboard.ActionPublish: 5}},
		conns: []switchboard.ConnInfo{{Address: "n1.c1", Name: "a \"quoted\"\\name\nline", Cred: switchboard.Cred{UID: 1000},
			Calls: 3, RingBytes: [3]int{1024, 2048, 4096}, EventFill: 8}},
	}
	m := newTestMetrics(connSeriesTop, 10, src, now)
	m.observeCall(switchboard.SystemService, 30*time.Microsecond, switchboard.CodeOK)
	m.observePeer(true, 2*time.Millisecond, switchboard.CodeDeadlineExceeded)
	out := expose(t, m)
	for _, want := range []string{
		"switchboard_uptime_seconds 90\n",
		"switchboard_calls_total 3\n",
		`switchboard_connection_calls_total{address="n1.c1",client="a \"quoted\"\\name\nline",uid="1000"} 3` + "\n",
		`switchboard_connection_ring_fill_bytes{address="n1.c1",client="a \"quoted\"\\name\nline",ring="event",uid="1000"} 8` + "\n",
		`switchboard_connection_ring_capacity_bytes{address="n1.c1",client="a \"quoted\"\\name\nline",ring="response",uid="1000"} 2048` + "\n",
		"# TYPE switchboard_connection_events_queued gauge\n",
		`switchboard_refusals_total{action="publish"} 5` + "\n",
		`switchboard_refusals_total{action="monitor"} 0` + "\n",
		`switchboard_call_duration_seconds_bucket{result="ok",service="system",le="5e-05"} 1` + "\n",
		`switchboard_peer_request_duration_seconds_count{kind="group",result="deadline"} 1` + "\n",
		"# TYPE process_cpu_seconds_total counter\n",
		"# TYPE go_goroutines gauge\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

// TestExpositionOffHasNoConnections: by default, no per-connection series,
// and the listing is not even asked for.
func TestExpositionOffHasNoConnections(t *testing.T) {
	src := &fakeStats{st: switchboard.NodeStats{Name: "n1", Started: time.Unix(1, 0)}, conns: []switchboard.ConnInfo{{Address: "x", Name: "c"}}}
	out := expose(t, newTestMetrics(connSeriesOff, 10, src, time.Unix(2, 0)))
	if strings.Contains(out, "switchboard_connection_") || strings.Contains(out, "switchboard_client_") {
		t.Errorf("per-connection series with metrics.connections = off:\n%s", out)
	}
}

// TestClientTableNeverGoesDown: the clients' counters add the ended
// connections' final counts, are not counted twice when a listing begun
// before a report still shows the connection, and do not dip when a
// connection has left the listing but not been reported yet; names past
// the limit share "(other)".
func TestClientTableNeverGoesDown(t *testing.T) {
	src := &fakeStats{st: switchboard.NodeStats{Name: "n1", Started: time.Unix(1, 0)}}
	m := newTestMetrics(connSeriesClient, 2, src, time.Unix(2, 0))
	calls := func(client string) string {
		out := expose(t, m)
		for line := range strings.SplitSeq(out, "\n") {
			if rest, ok := strings.CutPrefix(line, `switchboard_client_calls_total{client="`+client+`"} `); ok {
				return rest
			}
		}
		return "none"
	}
	conn := func(id uint64, name string, n uint64) switchboard.ConnInfo {
		return switchboard.ConnInfo{ID: id, Name: name, Calls: n}
	}
	src.conns = []switchboard.ConnInfo{conn(1, "a", 5), conn(2, "b", 1)}
	if got := calls("a"); got != "5" {
		t.Fatalf("a: %s calls, want 5", got)
	}
	// 1 made 2 more calls and left; the listing no longer shows it, the
	// report has not come: as last seen.
	src.conns = []switchboard.ConnInfo{conn(2, "b", 1)}
	if got := calls("a"); got != "5" {
		t.Fatalf("a before the report: %s, want 5", got)
	}
	m.clients.disconnected(conn(1, "a", 7))
	if got := calls("a"); got != "7" {
		t.Fatalf("a after the report: %s, want 7", got)
	}
	// A listing begun before 3's report still shows it.
	m.clients.begin()
	m.clients.disconnected(conn(3, "a", 4))
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		sink := make(chanSink)
		go drain(sink)
		m.clients.collect(sink, []switchboard.ConnInfo{conn(2, "b", 1), conn(3, "a", 3)})
		close(sink)
	}()
	<-ch
	if got := calls("a"); got != "11" {
		t.Fatalf("a after a stale listing: %s, want 11", got)
	}
	// The table is full (a, b). c takes the series of a, which has no
	// connection open, a's 11 calls going to "(other)"; d finds none to
	// take (b and c are open) and goes to "(other)".
	src.conns = append(src.conns, conn(4, "c", 1), conn(5, "d", 2))
	if got := calls(otherClients); got != "13" {
		t.Fatalf("(other): %s, want 13 (a's 11 and d's 2)", got)
	}
	if got := calls("c"); got != "1" {
		t.Fatalf("c: %s, want 1 (the series a gave up)", got)
	}
	if got := calls("a"); got != "none" {
		t.Fatalf("a still has a series: %s", got)
	}
	if got := calls("b"); got != "1" {
		t.Fatalf("b, open, lost its series: %s", got)
	}
}

// TestClientTableBounded: with no scraper, 1,000 connections that come
// and go with as many names leave the table bounded (no ids kept, at most
// limit names); scraped meanwhile, the names are evicted as they leave,
// never the open ones, and the sum over the clients never goes down.
func TestClientTableBounded(t *testing.T) {
	const limit = 4
	src := &fakeStats{st: switchboard.NodeStats{Name: "n1", Started: time.Unix(1, 0)}}
	m := newTestMetrics(connSeriesClient, limit, src, time.Unix(2, 0))
	tab := m.clients
	size := func() (names, closed, live, gone int) {
		tab.mu.Lock()
		defer tab.mu.Unlock()
		return len(tab.names), len(tab.closed), len(tab.live), len(tab.gone)
	}
	for id := uint64(1); id <= 1000; id++ {
		tab.disconnected(switchboard.ConnInfo{ID: id, Name: fmt.Sprintf("junk-%d", id), Calls: 1})
	}
	if names, closed, live, gone := size(); names > limit || closed > limit+1 || live != 0 || gone != 0 {
		t.Fatalf("after 1,000 connections and no scrape: %d names, %d sums, %d live, %d gone ids; want at most %d names and no ids",
			names, closed, live, gone, limit)
	}
	total := func() float64 {
		var sum float64
		for line := range strings.SplitSeq(expose(t, m), "\n") {
			if strings.HasPrefix(line, "switchboard_client_calls_total{") {
				v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				if err != nil {
					t.Fatal(err)
				}
				sum += v
			}
		}
		return sum
	}
	keep := switchboard.ConnInfo{ID: 5000, Name: "keeper", Calls: 1}
	src.conns = []switchboard.ConnInfo{keep}
	prev := total()
	if prev != 1001 {
		t.Fatalf("total %v, want 1001", prev)
	}
	for id := uint64(2000); id < 2100; id++ {
		ci := switchboard.ConnInfo{ID: id, Name: fmt.Sprintf("late-%d", id), Calls: 2}
		src.conns = []switchboard.ConnInfo{keep, ci}
		if got := total(); got < prev {
			t.Fatalf("the clients' total went down: %v after %v", got, prev)
		} else {
			prev = got
		}
		src.conns = []switchboard.ConnInfo{keep}
		tab.disconnected(ci)
	}
	if prev := total(); prev != 1201 {
		t.Fatalf("total %v, want 1201", prev)
	}
	if names, closed, live, gone := size(); names > limit || closed > limit+1 || live != 1 || gone != 0 {
		t.Fatalf("after 100 scrapes: %d names, %d sums, %d live, %d gone ids", names, closed, live, gone)
	}
	tab.mu.Lock()
	_, kept := tab.names["keeper"]
	tab.mu.Unlock()
	if !kept {
		t.Fatal("the open connection's name lost its series")
	}
}

type chanSink = chan prometheus.Metric

func drain(s chanSink) {
	for range s {
	}
}

// TestServiceLabels: services get a label each up to maxServiceLabels,
// later ones share "other"; once an id is resolved, "other" included, its
// lookup takes no lock (it returns while svcMu is held).
func TestServiceLabels(t *testing.T) {
	m := newMetrics(MetricsConfig{Connections: connSeriesOff})
	if l := m.service(switchboard.SystemService).label; l != "system" {
		t.Fatalf("system service labelled %q", l)
	}
	if l := m.service(0xFFFE).label; l != "bus" {
		t.Fatalf("bus labelled %q", l)
	}
	for id := uint16(1); id < maxServiceLabels-1; id++ {
		if l := m.service(id).label; l != strconv.Itoa(int(id)) {
			t.Fatalf("service %d labelled %q", id, l)
		}
	}
	if l := m.service(70).label; l != "other" {
		t.Fatalf("service 70, past the %d labels, labelled %q, want other", maxServiceLabels, l)
	}
	if l := m.service(5).label; l != "5" {
		t.Fatalf("service 5 labelled %q after the limit filled", l)
	}
	m.svcMu.Lock()
	done := make(chan string)
	go func() { done <- m.service(70).label + " " + m.service(5).label }()
	select {
	case l := <-done:
		if l != "other 5" {
			t.Errorf("labels %q under the lock", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second lookup of service 70 waits for svcMu")
	}
	m.svcMu.Unlock()
	m.observeCall(70, time.Millisecond, switchboard.CodeCanceled)
	m.observeCall(71, time.Millisecond, switchboard.CodeOK)
	out := expose(t, m)
	for _, want := range []string{
		`switchboard_call_duration_seconds_count{result="canceled",service="other"} 1`,
		`switchboard_call_duration_seconds_count{result="ok",service="other"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}
