package main

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchboard-ipc/switchboard"
)

// clientTable sums the connections' counters by client name (mode
// client), so that short-lived connections add to a series that lasts
// instead of each leaving one behind. At most limit names have a series
// each; the others share client="(other)": the series set is bounded
// whatever clients call themselves. When a new name needs a series and
// the table is full, the name least recently seen that has no connection
// open (none listed alive, none in the listing at hand) gives up its
// series, its totals folded into "(other)": the first names seen do not
// keep their series forever (any local user could take them with junk
// names), and no counter goes down, since what a name counted stays
// counted in "(other)" (its own series ends; should the name come back,
// its series starts again from its new connections, which Prometheus
// reads as a counter reset). Only when every name has a connection open
// does a new name go to "(other)" at once.
//
// A client's counters are the final counters of its connections that
// ended (WithDisconnectObserver) plus the last seen counters of those
// alive. The node's listing and the disconnect reports race, and a
// counter must never go down: a listing begun before a connection's
// report may still show it, and must not count it twice. So while a
// scrape is between its begin (before the listing) and the end of its
// collect, the table keeps the ids of the connections reported gone, and
// collect skips them; the node calls the observer after removing the
// connection from its table, so a listing begun after the report cannot
// show it, and collect forgets the ids as it ends. Without a scrape in
// progress no id is kept: with no scraper at all the table stays as
// small as the names and the open connections.
type clientTable struct {
	limit int

	mu       sync.Mutex
	names    map[string]*nameSlot  // names with their own series
	closed   map[string]*[]float64 // by key: counters of ended connections
	live     map[uint64]*liveConn  // by id: connections seen alive, not reported gone
	gone     map[uint64]struct{}   // by id: reported gone while a scrape is in progress
	scraping bool                  // between begin and the end of collect
	tick     uint64                // orders the names' uses
}

// nameSlot is a name with a series of its own.
type nameSlot struct {
	live int    // entries of live with this key
	used uint64 // tick of its last use
}

type liveConn struct {
	key  string
	vals []float64 // counters, as last seen
}

func newClientTable(limit int) *clientTable {
	return &clientTable{limit: limit, names: map[string]*nameSlot{}, closed: map[string]*[]float64{},
		live: map[uint64]*liveConn{}, gone: map[uint64]struct{}{}}
}

// key is the client label of name, taking a series for it if there is
// room or a name to evict (none in listed); it holds t.mu.
func (t *clientTable) key(name string, listed map[string]bool) string {
	t.tick++
	if s := t.names[name]; s != nil {
		s.used = t.tick
		return name
	}
	if len(t.names) >= t.limit && !t.evict(listed) {
		return otherClients
	}
	t.names[name] = &nameSlot{used: t.tick}
	return name
}

// evict frees the series of the least recently used name with no
// connection alive and none in listed, folding its totals into
// "(other)"; it reports whether it found one. It holds t.mu.
func (t *clientTable) evict(listed map[string]bool) bool {
	victim, oldest := "", uint64(0)
	for n, s := range t.names {
		if s.live == 0 && !listed[n] && (victim == "" || s.used < oldest) {
			victim, oldest = n, s.used
		}
	}
	if victim == "" {
		return false
	}
	delete(t.names, victim)
	if sum := t.closed[victim]; sum != nil {
		delete(t.closed, victim)
		o := t.closedSum(otherClients)
		for i, v := range *sum {
			(*o)[i] += v
		}
	}
	return true
}

// closedSum returns the sums of key's ended connections; it holds t.mu.
func (t *clientTable) closedSum(k string) *[]float64 {
	sum := t.closed[k]
	if sum == nil {
		s := make([]float64, nCounters)
		sum = &s
		t.closed[k] = sum
	}
	return sum
}

// addLive records a connection seen alive; it holds t.mu.
func (t *clientTable) addLive(id uint64, k string) *liveConn {
	lc := &liveConn{key: k}
	t.live[id] = lc
	if s := t.names[k]; s != nil {
		s.live++
	}
	return lc
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
	var k string
	if lc := t.live[ci.ID]; lc != nil {
		k = lc.key
		delete(t.live, ci.ID)
		if s := t.names[k]; s != nil {
			s.live--
		}
	} else {
		k = t.key(ci.Name, nil)
	}
	sum := t.closedSum(k)
	for i, v := range counters(&ci) {
		(*sum)[i] += v
	}
	if t.scraping {
		t.gone[ci.ID] = struct{}{}
	}
}

// begin starts a scrape; call it before listing the connections, and
// collect after.
func (t *clientTable) begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.scraping = true
}

// collect writes the clients' series from conns, listed after begin,
// and ends the scrape.
func (t *clientTable) collect(ch chan<- prometheus.Metric, conns []switchboard.ConnInfo) {
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
	listed := make(map[string]bool, len(conns))
	for i := range conns {
		listed[conns[i].Name] = true
	}
	for i := range conns {
		ci := &conns[i]
		if _, ended := t.gone[ci.ID]; ended {
			continue // already in closed
		}
		lc := t.live[ci.ID]
		if lc == nil {
			lc = t.addLive(ci.ID, t.key(ci.Name, listed))
		}
		lc.vals = counters(ci)
		a := get(lc.key)
		a.conns++
		for j, s := range connSeriesList[nCounters:] {
			a.gauges[j] += s.v(ci)
		}
	}
	// Ids reported from here on cannot be in this listing, and those
	// reported so far cannot be in the next one, begun after them.
	clear(t.gone)
	t.scraping = false
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
