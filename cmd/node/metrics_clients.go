package main

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchboard-ipc/switchboard"
)

// clientTable sums the connections' counters by client name (mode
// client), so that short-lived connections add to a series that lasts
// instead of each leaving one behind. It gives the first limit names it
// sees a series each, and every later name the one series
// client="(other)": the series set is bounded whatever clients call
// themselves.
//
// A client's counters are the final counters of its connections that
// ended (WithDisconnectObserver) plus the last seen counters of those
// alive. The node's listing and the disconnect reports race, and a
// counter must never go down, so the table keeps, for a moment, the ids
// of the connections that ended: a listing begun before a connection's
// report may still show it, and must not count it twice. The node calls
// the observer after removing the connection from its table, so a
// listing begun after the report cannot show it, and the id can go.
type clientTable struct {
	limit int

	mu     sync.Mutex
	names  map[string]bool       // names with their own series
	closed map[string]*[]float64 // by key: counters of ended connections
	live   map[uint64]*liveConn  // by id: connections seen alive, not reported gone
	gone   map[uint64]uint64     // by id: ended connections, with the seq of their report
	seq    uint64                // counts the reports and the listings
}

type liveConn struct {
	key  string
	vals []float64 // counters, as last seen
}

func newClientTable(limit int) *clientTable {
	return &clientTable{limit: limit, names: map[string]bool{}, closed: map[string]*[]float64{},
		live: map[uint64]*liveConn{}, gone: map[uint64]uint64{}}
}

// key is the client label of name; it holds t.mu.
func (t *clientTable) key(name string) string {
	if t.names[name] {
		return name
	}
	if len(t.names) < t.limit {
		t.names[name] = true
		return name
	}
	return otherClients
}

func counters(ci *switchboard.ConnInfo) []float64 {
	v := make([]float64, nCounters)
	for i, s := range connSeriesList[:nCounters] {
		v[i] = s.v(ci)
	}
	return v
}

// disconnected takes a connection's final counters (the disconnect observer).
func (t *clientTable) disconnected(ci switchboard.ConnInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.key(ci.Name)
	if lc := t.live[ci.ID]; lc != nil {
		k = lc.key
		delete(t.live, ci.ID)
	}
	sum := t.closed[k]
	if sum == nil {
		s := make([]float64, nCounters)
		sum = &s
		t.closed[k] = sum
	}
	for i, v := range counters(&ci) {
		(*sum)[i] += v
	}
	t.seq++
	t.gone[ci.ID] = t.seq
}

// begin starts a scrape; call it before listing the connections.
func (t *clientTable) begin() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	return t.seq
}

// collect writes the clients' series from conns, listed after begin
// returned seq.
func (t *clientTable) collect(ch chan<- prometheus.Metric, conns []switchboard.ConnInfo, seq uint64) {
	t.mu.Lock()
	type agg struct {
		counters []float64
		conns    float64
		gauges   []float64
	}
	out := map[string]*agg{}
	get := func(k string) *agg {
		a := out[k]
		if a == nil {
			a = &agg{counters: make([]float64, nCounters), gauges: make([]float64, len(connSeriesList)-nCounters)}
			out[k] = a
		}
		return a
	}
	for i := range conns {
		ci := &conns[i]
		if _, ended := t.gone[ci.ID]; ended {
			continue // already in closed
		}
		lc := t.live[ci.ID]
		if lc == nil {
			lc = &liveConn{key: t.key(ci.Name)}
			t.live[ci.ID] = lc
		}
		lc.vals = counters(ci)
		a := get(lc.key)
		a.conns++
		for j, s := range connSeriesList[nCounters:] {
			a.gauges[j] += s.v(ci)
		}
	}
	// Ids reported before this listing began cannot be in it, nor in any
	// later one.
	for id, s := range t.gone {
		if s < seq {
			delete(t.gone, id)
		}
	}
	for k, sum := range t.closed {
		a := get(k)
		for i, v := range *sum {
			a.counters[i] += v
		}
	}
	for _, lc := range t.live { // alive, or gone but not reported yet: as last seen
		a := get(lc.key)
		for i, v := range lc.vals {
			a.counters[i] += v
		}
	}
	t.mu.Unlock()

	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := out[k]
		ch <- prometheus.MustNewConstMetric(descClientConns, prometheus.GaugeValue, a.conns, k)
		for i, s := range connSeriesList[:nCounters] {
			ch <- prometheus.MustNewConstMetric(s.cli, prometheus.CounterValue, a.counters[i], k)
		}
		for j, s := range connSeriesList[nCounters:] {
			ch <- prometheus.MustNewConstMetric(s.cli, prometheus.GaugeValue, a.gauges[j], k)
		}
	}
}
