package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
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
// text exposition: node totals and per-connection series, with sane
// values after some calls; over a Unix socket and over TCP.
func TestMetricsScrape(t *testing.T) {
	dir := publicDir(t)
	msock := filepath.Join(dir, "metrics.sock")
	d := startDaemon(t, daemonOpts{args: []string{"--metrics-listen", "unix:" + msock, "--name", "metrics"}})
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
