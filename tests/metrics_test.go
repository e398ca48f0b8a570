package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/switchboard-ipc/switchboard"
)

// scrape fetches /metrics through client and parses it with Prometheus'
// own text parser (legacy metric names: the strictest check).
func scrape(t *testing.T, client *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q, want the text exposition format", ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of family name's sample whose labels include
// want (nil: the only sample).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s has type %v", name, f.GetType())
	}
	t.Fatalf("no %s sample with labels %v", name, want)
	return 0
}

// TestMetricsScrape: with --metrics-listen, the node serves the Prometheus
// text exposition: node totals and (with --metrics-connections top)
// per-connection series, with sane values after some calls; over a Unix
// socket and over TCP.
func TestMetricsScrape(t *testing.T) {
	dir := publicDir(t)
	msock := filepath.Join(dir, "metrics.sock")
	d := startDaemon(t, daemonOpts{args: []string{"--metrics-listen", "unix:" + msock, "--name", "metrics", "--metrics-connections", "top", "--log-level", "info"}})
	d.waitLog(t, "metrics serving", 1) // the node's socket accepts before the metrics' does
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket), switchboard.WithClientName("scraped"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const calls = 25
	payload := make([]byte, 1000)
	for range calls {
		if _, err := c.Call(ctx, switchboard.SystemService, switchboard.SysEcho, payload); err != nil {
			t.Fatal(err)
		}
	}
	overUnix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", msock)
	}}, Timeout: 10 * time.Second}
	defer overUnix.CloseIdleConnections()
	fams := scrape(t, overUnix, "http://node/metrics")

	node := map[string]float64{
		"switchboard_connections":                float64(1),
		"switchboard_connections_accepted_total": 1,
		"switchboard_calls_total":                calls,
		"switchboard_handshakes_refused_total":   0,
		"switchboard_protocol_violations_total":  0,
		"switchboard_evictions_total":            0,
		"switchboard_events_dropped_total":       0,
		"switchboard_unserved_total":             0,
		"switchboard_late_replies_total":         0,
		"switchboard_stuck_handlers":             0,
		"switchboard_actor_handler_panics_total": 0,
	}
	for name, want := range node {
		if got := value(t, fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if up := value(t, fams, "switchboard_uptime_seconds", nil); up <= 0 || up > 600 {
		t.Errorf("switchboard_uptime_seconds = %v", up)
	}
	if v := value(t, fams, "switchboard_build_info", map[string]string{"version": switchboard.Version, "node": "metrics"}); v != 1 {
		t.Errorf("switchboard_build_info = %v", v)
	}
	conn := map[string]string{"client": "scraped", "address": c.Address()}
	perConn := map[string]float64{
		"switchboard_connection_calls_total":          calls,
		"switchboard_connection_replies_total":        calls,
		"switchboard_connection_received_bytes_total": calls * 1000,
		"switchboard_connection_sent_bytes_total":     calls * 1000,
		"switchboard_connection_events_dropped_total": 0,
		"switchboard_connection_events_queued":        0,
		"switchboard_connection_late_replies_total":   0,
	}
	for name, want := range perConn {
		if got := value(t, fams, name, conn); got != want {
			t.Errorf("%s%v = %v, want %v", name, conn, got, want)
		}
	}
	for _, ring := range []string{"request", "response", "event"} {
		l := map[string]string{"client": "scraped", "ring": ring}
		if got := value(t, fams, "switchboard_connection_ring_capacity_bytes", l); got != 1<<20 {
			t.Errorf("ring %s capacity %v, want 1 MiB", ring, got)
		}
		if got := value(t, fams, "switchboard_connection_ring_fill_bytes", l); got < 0 || got > 1<<20 {
			t.Errorf("ring %s fill %v", ring, got)
		}
	}
	// Every counter is named *_total, as Prometheus expects.
	for name, f := range fams {
		if (f.GetType() == dto.MetricType_COUNTER) != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: type %v and name disagree", name, f.GetType())
		}
	}

	// After the client leaves, its series go; the node's totals stay.
	c.Close()
	checkFor(t, 10*time.Second, func() error {
		fams = scrape(t, overUnix, "http://node/metrics")
		if n := len(fams["switchboard_connection_calls_total"].GetMetric()); n != 0 {
			return fmt.Errorf("%d connection series after the client left", n)
		}
		return nil
	})
	if got := value(t, fams, "switchboard_calls_total", nil); got != calls {
		t.Errorf("switchboard_calls_total = %v after the client left, want %d", got, calls)
	}

	if code := d.stop(t); code != 0 {
		t.Fatalf("node exit code %d", code)
	}
}

// TestMetricsTCP: HOST:PORT listens on TCP (port 0: the node logs the
// port it got).
func TestMetricsTCP(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--metrics-listen", "127.0.0.1:0", "--log-level", "info"}})
	d.waitLog(t, "metrics serving", 1)
	m := regexp.MustCompile(`metrics serving" listen=(127\.0\.0\.1:\d+)`).FindStringSubmatch(d.log.String())
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", d.log.String())
	}
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	fams := scrape(t, client, "http://"+m[1]+"/metrics")
	if got := value(t, fams, "switchboard_connections", nil); got != 0 {
		t.Errorf("switchboard_connections = %v, want 0", got)
	}
}

// series counts the samples of the switchboard_* families (the process
// and Go collectors' vary on their own).
func series(fams map[string]*dto.MetricFamily) int {
	n := 0
	for name, f := range fams {
		if strings.HasPrefix(name, "switchboard_") {
			n += len(f.GetMetric())
		}
	}
	return n
}

// sum adds up family name's samples (counters and gauges) and counts
// its distinct values of label.
func sum(fams map[string]*dto.MetricFamily, name, label string) (total float64, values int) {
	seen := map[string]bool{}
	for _, m := range fams[name].GetMetric() {
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				seen[l.GetValue()] = true
			}
		}
	}
	return total, len(seen)
}

// TestMetricsBoundedAndHistograms: the exposition has the latency
// histograms (calls by service, peer requests) and the process and Go
// runtime metrics; with --metrics-connections client, 1,000 short-lived
// connections with 1,000 names leave the series set bounded (the first
// names get series, the rest share client="(other)") and lose no call.
func TestMetricsBoundedAndHistograms(t *testing.T) {
	const limit = 4
	d := startDaemon(t, daemonOpts{args: []string{"--metrics-listen", "127.0.0.1:0", "--log-level", "info",
		"--metrics-connections", "client", "--metrics-connections-limit", fmt.Sprint(limit)}})
	d.waitLog(t, "metrics serving", 1)
	m := regexp.MustCompile(`metrics serving" listen=(127\.0\.0\.1:\d+)`).FindStringSubmatch(d.log.String())
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", d.log.String())
	}
	url := "http://" + m[1] + "/metrics"
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	small := switchboard.WithRings(switchboard.MinRingSize, switchboard.MinRingSize, switchboard.MinRingSize)

	srv, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket), switchboard.WithClientName("server"), small,
		switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) { return r.Payload, nil }))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket), switchboard.WithClientName("steady"), small)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 10 {
		if _, err := c.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Request(ctx, srv.Address(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, client, url)
	for _, name := range []string{"process_cpu_seconds_total", "process_open_fds", "process_resident_memory_bytes", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		if before[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	h := before["switchboard_call_duration_seconds"]
	if h.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("switchboard_call_duration_seconds: %v", h)
	}
	var pings uint64
	for _, s := range h.GetMetric() {
		ls := map[string]string{}
		for _, l := range s.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		if ls["service"] == "system" && ls["result"] == "ok" {
			pings = s.GetHistogram().GetSampleCount()
			if b := s.GetHistogram().GetBucket(); len(b) < 10 || b[len(b)-1].GetCumulativeCount() != pings {
				t.Errorf("buckets %v", b)
			}
		}
	}
	if pings != 10 {
		t.Errorf("switchboard_call_duration_seconds{service=system,result=ok} has %d samples, want 10", pings)
	}
	// The peer series are there from the start, by kind and result; one
	// request went to a peer, and was answered.
	p := before["switchboard_peer_request_duration_seconds"]
	var peerOK, peerAll uint64
	for _, s := range p.GetMetric() {
		ls := map[string]string{}
		for _, l := range s.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		peerAll += s.GetHistogram().GetSampleCount()
		if ls["kind"] == "peer" && ls["result"] == "ok" {
			peerOK = s.GetHistogram().GetSampleCount()
		}
	}
	if p.GetType() != dto.MetricType_HISTOGRAM || len(p.GetMetric()) != 8 || peerOK != 1 || peerAll != 1 {
		t.Errorf("switchboard_peer_request_duration_seconds: %d series, %d answered peer requests, %d in all; want 8, 1, 1", len(p.GetMetric()), peerOK, peerAll)
	}

	const short = 1000
	for i := range short {
		sc, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket), switchboard.WithClientName(fmt.Sprintf("short-%d", i)), small)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
			t.Fatal(err)
		}
		sc.Close()
		if i == short/2 {
			scrape(t, client, url) // a scrape among them: their counts are not lost either
		}
	}
	var after map[string]*dto.MetricFamily
	checkFor(t, 10*time.Second, func() error {
		after = scrape(t, client, url)
		if n := value(t, after, "switchboard_connections", nil); n != 2 {
			return fmt.Errorf("%v connections, want 2", n)
		}
		return nil
	})
	calls, clients := sum(after, "switchboard_client_calls_total", "client")
	if clients != limit+1 {
		t.Errorf("%d client label values, want %d names and (other)", clients, limit+1)
	}
	if calls != 10+short {
		t.Errorf("the clients' calls add up to %v, want %d", calls, 10+short)
	}
	if conns, _ := sum(after, "switchboard_client_connections", "client"); conns != 2 {
		t.Errorf("switchboard_client_connections adds up to %v, want 2", conns)
	}
	b, a := series(before), series(after)
	t.Logf("switchboard_* series: %d before, %d after %d connections", b, a, short)
	if perClient := len(fams(after, "switchboard_client_")); a > b+(limit+1)*perClient {
		t.Errorf("%d series after %d connections, %d before: unbounded", a, short, b)
	}
	if a > 200 {
		t.Errorf("%d series", a)
	}
}

// fams lists the families whose names start with prefix.
func fams(all map[string]*dto.MetricFamily, prefix string) []string {
	var out []string
	for name := range all {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

// TestProcsAdaptive: a node with procs = adaptive runs at one Go P while
// nothing keeps it busy, and at all of them again while a client calls it
// back to back; the metrics say so.
func TestProcsAdaptive(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: the node keeps its one P")
	}
	dir := publicDir(t)
	msock := filepath.Join(dir, "metrics.sock")
	d := startDaemon(t, daemonOpts{args: []string{"--metrics-listen", "unix:" + msock, "--procs", "adaptive", "--log-level", "info"}, env: []string{"GOMAXPROCS=2"}})
	d.waitLog(t, "metrics serving", 1) // the node's socket accepts before the metrics' does
	overUnix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", msock)
	}}, Timeout: 10 * time.Second}
	defer overUnix.CloseIdleConnections()
	metric := func(name string) float64 { return value(t, scrape(t, overUnix, "http://node/metrics"), name, nil) }
	atOne := func(want float64) func() error {
		return func() error {
			if v := metric("switchboard_procs_one"); v != want {
				return fmt.Errorf("switchboard_procs_one = %v, want %v", v, want)
			}
			return nil
		}
	}
	checkFor(t, 30*time.Second, atOne(1)) // idle
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Four callers, back to back: busy rings and, on a slow or loaded
	// host, most of a core.
	stop, done := make(chan struct{}), make(chan error, 4)
	for range 4 {
		go func() {
			p := make([]byte, 64)
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if _, err := c.Call(ctx, switchboard.SystemService, switchboard.SysEcho, p); err != nil {
					done <- err
					return
				}
			}
		}()
	}
	checkFor(t, 30*time.Second, atOne(0)) // calls back to back
	close(stop)
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if v := metric("switchboard_procs_ups_total"); v < 1 {
		t.Errorf("switchboard_procs_ups_total = %v, want at least 1", v)
	}
	if v := metric("switchboard_procs_downs_total"); v < 1 {
		t.Errorf("switchboard_procs_downs_total = %v, want at least 1", v)
	}
	if v := metric("switchboard_procs_one_seconds_total"); v <= 0 {
		t.Errorf("switchboard_procs_one_seconds_total = %v, want more than 0", v)
	}
	checkFor(t, 30*time.Second, atOne(1)) // idle again
}
