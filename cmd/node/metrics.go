package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/switchboard-ipc/switchboard"
)

// The Prometheus exposition, built with client_golang on a private
// registry (never the global one, never the default HTTP mux): the node's
// totals read from Node.Stats at each scrape, latency histograms fed by
// the node's observers, the process and Go runtime collectors, and,
// opt-in, per-connection detail kept bounded (metrics.connections).

// statsSource is what the exposition reads; *switchboard.Node is one.
type statsSource interface {
	Stats() switchboard.NodeStats
	Connections() []switchboard.ConnInfo
}

// Per-connection detail (metrics.connections).
const (
	connSeriesOff    = "off"    // none: the node's totals only
	connSeriesClient = "client" // by client name, aggregated, for at most metrics.connections_limit names
	connSeriesTop    = "top"    // per connection, the metrics.connections_limit busiest by bytes
)

// otherClients is the client label of the connections whose names came
// after the table of names was full.
const otherClients = "(other)"

// latencyBuckets, in seconds: local IPC answers in microseconds; handlers
// and peers may take seconds.
var latencyBuckets = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// maxServiceLabels bounds the service label of the call histogram; later
// services are counted as "other".
const maxServiceLabels = 64

// metrics is the node's registry and what feeds it.
type metrics struct {
	reg     *prometheus.Registry
	calls   *prometheus.HistogramVec
	peers   *prometheus.HistogramVec
	mode    string
	clients *clientTable // mode client

	// The calls histogram's series by service id, resolved once: the
	// per-call path is an atomic load and an index, without a lock or
	// WithLabelValues' hashing. Ids past maxServiceLabels point to other.
	svcs    [1 << 16]atomic.Pointer[svcSeries]
	svcMu   sync.Mutex                       // held to resolve a new id
	nLabels int                              // ids with a label of their own
	other   *svcSeries                       // made with the first id past the limit
	peerObs [2][nResults]prometheus.Observer // by kind (peer, group) and result
}

// svcSeries is one service label's observers, by result.
type svcSeries struct {
	label string
	obs   [nResults]prometheus.Observer
}

// results are the values of the result label, in resultIndex's order.
var results = [...]string{"ok", "error", "deadline", "canceled"}

const nResults = len(results)

// newMetrics builds the registry for a node configured by cfg; the node
// is attached later (attach), since it is built with nodeOptions.
func newMetrics(cfg MetricsConfig) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchboard_call_duration_seconds",
			Help:    "Calls to node services (service bus: the node's own bus operations), from the request's read to its result, by service and result (ok, error, deadline, canceled).",
			Buckets: latencyBuckets,
		}, []string{"service", "result"}),
		peers: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchboard_peer_request_duration_seconds",
			Help:    "Requests to a peer or a group, from the request's read to its answer, deadline or cancel, by kind (peer, group) and result.",
			Buckets: latencyBuckets,
		}, []string{"kind", "result"}),
		mode: cfg.Connections,
	}
	for k, kind := range []string{"peer", "group"} {
		for r, res := range results {
			m.peerObs[k][r] = m.peers.WithLabelValues(kind, res)
		}
	}
	if m.mode == connSeriesClient {
		m.clients = newClientTable(int(cfg.ConnectionsLimit))
	}
	m.reg.MustRegister(m.calls, m.peers,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return m
}

// nodeOptions are the observers that feed the registry.
func (m *metrics) nodeOptions() []switchboard.NodeOption {
	opts := []switchboard.NodeOption{
		switchboard.WithCallObserver(m.observeCall),
		switchboard.WithPeerObserver(m.observePeer),
	}
	if m.clients != nil {
		opts = append(opts, switchboard.WithDisconnectObserver(m.clients.disconnected))
	}
	return opts
}

// attach registers the collector that reads src at each scrape.
func (m *metrics) attach(src statsSource, limit int) {
	m.reg.MustRegister(&nodeCollector{src: src, mode: m.mode, limit: limit, clients: m.clients, now: time.Now})
}

// resultIndex is the index in results of code's label.
func resultIndex(code switchboard.Code) int {
	switch code {
	case switchboard.CodeOK:
		return 0
	case switchboard.CodeDeadlineExceeded:
		return 2
	case switchboard.CodeCanceled:
		return 3
	}
	return 1
}

func (m *metrics) observeCall(service uint16, d time.Duration, code switchboard.Code) {
	m.service(service).obs[resultIndex(code)].Observe(d.Seconds())
}

func (m *metrics) observePeer(group bool, d time.Duration, code switchboard.Code) {
	k := 0
	if group {
		k = 1
	}
	m.peerObs[k][resultIndex(code)].Observe(d.Seconds())
}

func (m *metrics) newSvcSeries(label string) *svcSeries {
	s := &svcSeries{label: label}
	for r, res := range results {
		s.obs[r] = m.calls.WithLabelValues(label, res)
	}
	return s
}

// service returns the series of a service: labelled "system", "bus", or
// its id in decimal; past maxServiceLabels services, "other". Only the
// first call for an id takes svcMu; later ones, "other" included, load
// the cached pointer.
func (m *metrics) service(id uint16) *svcSeries {
	if s := m.svcs[id].Load(); s != nil {
		return s
	}
	m.svcMu.Lock()
	defer m.svcMu.Unlock()
	if s := m.svcs[id].Load(); s != nil {
		return s
	}
	if m.other == nil && m.nLabels >= maxServiceLabels {
		m.other = m.newSvcSeries("other")
	}
	s := m.other
	if m.nLabels < maxServiceLabels {
		m.nLabels++
		switch id {
		case switchboard.SystemService:
			s = m.newSvcSeries("system")
		case 0xFFFE:
			s = m.newSvcSeries("bus")
		default:
			s = m.newSvcSeries(strconv.Itoa(int(id)))
		}
	}
	m.svcs[id].Store(s)
	return s
}

// nodeCollector reads the node's totals, and its connections when asked
// for per-connection detail, at each scrape.
type nodeCollector struct {
	src     statsSource
	mode    string
	limit   int
	clients *clientTable
	now     func() time.Time
	scrape  sync.Mutex // one Collect at a time: clientTable's order of listings and reports needs it
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descBuild       = desc("switchboard_build_info", "Always 1; the labels say which build serves.", "version", "node")
	descStart       = desc("switchboard_start_time_seconds", "When the node started, in Unix seconds.")
	descUptime      = desc("switchboard_uptime_seconds", "Seconds since the node started.")
	descRefusals    = desc("switchboard_refusals_total", "Actions refused by the authorization or the policy, on every path, by action.", "action")
	descClientConns = desc("switchboard_client_connections", "Connections open now, by client name.", "client")
	descRingFill    = desc("switchboard_connection_ring_fill_bytes", "Bytes waiting in a connection's ring.", "address", "client", "uid", "ring")
	descRingCap     = desc("switchboard_connection_ring_capacity_bytes", "Capacity of a connection's ring.", "address", "client", "uid", "ring")
	descConnAge     = desc("switchboard_connection_age_seconds", "Seconds since the connection was accepted.", "address", "client", "uid")
)

// nodeScalar is one of the node's totals.
type nodeScalar struct {
	d   *prometheus.Desc
	typ prometheus.ValueType
	v   func(*switchboard.NodeStats) float64
}

var nodeScalars = []nodeScalar{
	{desc("switchboard_connections", "Connections open now."), prometheus.GaugeValue, func(s *switchboard.NodeStats) float64 { return float64(s.Connections) }},
	{desc("switchboard_connections_accepted_total", "Connections accepted since the node started."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Accepted) }},
	{desc("switchboard_handshakes_refused_total", "Connections refused by the authorization or the policy."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.HandshakesRefused) }},
	{desc("switchboard_descriptors_exhausted_total", "Times the node found no descriptor free to accept or set up a connection."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.DescriptorsExhausted) }},
	{desc("switchboard_calls_total", "Requests served by node services."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Calls) }},
	{desc("switchboard_events_total", "Events offered to clients."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Events) }},
	{desc("switchboard_protocol_violations_total", "Connections closed for breaking the protocol."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Violations) }},
	{desc("switchboard_evictions_total", "Clients disconnected as slow consumers."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Evictions) }},
	{desc("switchboard_events_dropped_total", "Events dropped for slow clients."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Dropped) }},
	{desc("switchboard_unserved_total", "Frames departed clients wrote that were not served within the drain limit."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Unserved) }},
	{desc("switchboard_late_replies_total", "Replies discarded because their caller had gone (deadline, cancel, disconnect)."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.LateReplies) }},
	{desc("switchboard_procs_one", "1 while the node's governor (procs = adaptive) runs the process at one Go P, else 0."), prometheus.GaugeValue, func(s *switchboard.NodeStats) float64 { return b2f(s.Procs.One) }},
	{desc("switchboard_procs_downs_total", "Moves of the node's governor to one Go P (procs = adaptive)."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Procs.Downs) }},
	{desc("switchboard_procs_ups_total", "Moves of the node's governor from one Go P back to all of them."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.Procs.Ups) }},
	{desc("switchboard_procs_one_seconds_total", "Seconds the process ran at one Go P."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return s.Procs.AtOne.Seconds() }},
	{desc("switchboard_stuck_handlers", "Handlers still running for connections released without them (they ignore their context)."), prometheus.GaugeValue, func(s *switchboard.NodeStats) float64 { return float64(s.StuckHandlers) }},
	{desc("switchboard_spare_segments", "Shared-memory segments made ahead for the connections to come, never given to a client."), prometheus.GaugeValue, func(s *switchboard.NodeStats) float64 { return float64(s.SpareSegments) }},
	{desc("switchboard_actor_handler_panics_total", "Panics of actor handlers, each answered with an internal error."), prometheus.CounterValue, func(s *switchboard.NodeStats) float64 { return float64(s.ActorPanics) }},
}

// connSeries is one per-connection series: per connection (mode top,
// switchboard_connection_*) or summed by client name (mode client,
// switchboard_client_*).
type connSeries struct {
	name, help string
	counter    bool
	v          func(c *switchboard.ConnInfo) float64
	conn, cli  *prometheus.Desc
}

var connSeriesList = func() []*connSeries {
	l := []*connSeries{
		{name: "calls_total", help: "Calls made to node services.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Calls) }},
		{name: "sends_total", help: "One-way sends made.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Sends) }},
		{name: "replies_total", help: "Replies received.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Replies) }},
		{name: "events_total", help: "Events delivered.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Events) }},
		{name: "events_dropped_total", help: "Events dropped.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Dropped) }},
		{name: "received_bytes_total", help: "Payload bytes the node received.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.BytesIn) }},
		{name: "sent_bytes_total", help: "Payload bytes the node sent.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.BytesOut) }},
		{name: "protocol_violations_total", help: "Protocol violations.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Violations) }},
		{name: "late_replies_total", help: "Replies the node dropped on the connection's account: results that came after it left or its actor call was forgotten, answers it gave peers that had given up.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.LateReplies) }},
		{name: "handler_panics_total", help: "Handler panics while serving.", counter: true, v: func(c *switchboard.ConnInfo) float64 { return float64(c.Panics) }},
		{name: "events_queued", help: "Events queued in the node behind full event rings.", v: func(c *switchboard.ConnInfo) float64 { return float64(c.EventsQueued) }},
		{name: "pending_replies", help: "Calls to peers waiting for a reply.", v: func(c *switchboard.ConnInfo) float64 { return float64(c.Pending) }},
	}
	for _, s := range l {
		s.conn = desc("switchboard_connection_"+s.name, s.help+" One connection (metrics.connections = top).", "address", "client", "uid")
		s.cli = desc("switchboard_client_"+s.name, s.help+" Summed over the connections with one client name, those gone included for counters (metrics.connections = client).", "client")
	}
	return l
}()

// nCounters is how many of connSeriesList are counters (they come first).
var nCounters = func() int {
	n := 0
	for _, s := range connSeriesList {
		if s.counter {
			n++
		}
	}
	return n
}()

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuild, descStart, descUptime, descRefusals} {
		ch <- d
	}
	for _, s := range nodeScalars {
		ch <- s.d
	}
	switch c.mode {
	case connSeriesTop:
		for _, s := range connSeriesList {
			ch <- s.conn
		}
		ch <- descRingFill
		ch <- descRingCap
		ch <- descConnAge
	case connSeriesClient:
		for _, s := range connSeriesList {
			ch <- s.cli
		}
		ch <- descClientConns
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	c.scrape.Lock()
	defer c.scrape.Unlock()
	now := c.now()
	if c.clients != nil {
		c.clients.begin() // before the listing: see clientTable
	}
	st := c.src.Stats()
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, switchboard.Version, st.Name)
	ch <- prometheus.MustNewConstMetric(descStart, prometheus.GaugeValue, float64(st.Started.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(descUptime, prometheus.GaugeValue, now.Sub(st.Started).Seconds())
	for _, s := range nodeScalars {
		ch <- prometheus.MustNewConstMetric(s.d, s.typ, s.v(&st))
	}
	for a := switchboard.ActionConnect; a <= switchboard.ActionMonitor; a++ {
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(st.Refusals[a]), a.String())
	}
	switch c.mode {
	case connSeriesTop:
		c.collectTop(ch, now)
	case connSeriesClient:
		c.clients.collect(ch, c.src.Connections())
	}
}

// collectTop writes the series of the limit connections that moved the
// most bytes.
func (c *nodeCollector) collectTop(ch chan<- prometheus.Metric, now time.Time) {
	conns := c.src.Connections()
	slices.SortFunc(conns, func(a, b switchboard.ConnInfo) int {
		return cmp.Or(cmp.Compare(b.BytesIn+b.BytesOut, a.BytesIn+a.BytesOut), cmp.Compare(a.ID, b.ID))
	})
	conns = conns[:min(len(conns), c.limit)]
	for i := range conns {
		ci := &conns[i]
		ls := []string{ci.Address, ci.Name, strconv.FormatUint(uint64(ci.Cred.UID), 10)}
		for _, s := range connSeriesList {
			typ := prometheus.GaugeValue
			if s.counter {
				typ = prometheus.CounterValue
			}
			ch <- prometheus.MustNewConstMetric(s.conn, typ, s.v(ci), ls...)
		}
		ch <- prometheus.MustNewConstMetric(descConnAge, prometheus.GaugeValue, now.Sub(ci.Since).Seconds(), ls...)
		for r, fill := range []int{ci.RequestFill, ci.ResponseFill, ci.EventFill} {
			ch <- prometheus.MustNewConstMetric(descRingFill, prometheus.GaugeValue, float64(fill), append(ls, ringNames[r])...)
			ch <- prometheus.MustNewConstMetric(descRingCap, prometheus.GaugeValue, float64(ci.RingBytes[r]), append(ls, ringNames[r])...)
		}
	}
}

var ringNames = [3]string{"request", "response", "event"}

// metricsServer serves /metrics on its own listener and mux. Its one
// goroutine is owned by it: stop ends it and waits.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// listenMetrics listens on addr (HOST:PORT, or unix:PATH: a stale socket
// file left by a dead process is replaced) and serves reg.
func listenMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*metricsServer, error) {
	var ln net.Listener
	var err error
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if _, serr := os.Lstat(path); serr == nil {
			if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
				c.Close()
				return nil, fmt.Errorf("metrics: another process serves %s", path)
			}
			os.Remove(path)
		}
		ln, err = net.Listen("unix", path)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            errLog,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "Switchboard node: metrics at /metrics")
	})
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", slog.String("error", err.Error()))
		}
	}()
	return m, nil
}

// addr is where it listens (the port chosen for HOST:0).
func (m *metricsServer) addr() string { return m.ln.Addr().String() }

// stop closes the listener, gives scrapes in flight a moment, and waits
// for the server's goroutine.
func (m *metricsServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		m.srv.Close()
	}
	<-m.done
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
