package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// The Prometheus text exposition (format 0.0.4), written by hand from
// Node.Stats and Node.Connections at each scrape: no client library, no
// global registry, no default HTTP mux.

const expositionType = "text/plain; version=0.0.4; charset=utf-8"

// statsSource is what the exposition reads; *switchboard.Node is one.
type statsSource interface {
	Stats() switchboard.NodeStats
	Connections() []switchboard.ConnInfo
}

// writeMetrics writes the node's series, then each connection's.
func writeMetrics(w io.Writer, src statsSource, now time.Time) error {
	bw := bufio.NewWriter(w)
	st := src.Stats()
	e := expo{w: bw}
	e.family("switchboard_build_info", "gauge", "Always 1; the labels say which build serves.")
	e.sample("switchboard_build_info", labels{"version", switchboard.Version, "node", st.Name}, 1)
	e.one("switchboard_start_time_seconds", "gauge", "When the node started, in Unix seconds.", float64(st.Started.UnixNano())/1e9)
	e.one("switchboard_uptime_seconds", "gauge", "Seconds since the node started.", now.Sub(st.Started).Seconds())
	e.one("switchboard_connections", "gauge", "Connections open now.", float64(st.Connections))
	e.one("switchboard_connections_accepted_total", "counter", "Connections accepted since the node started.", float64(st.Accepted))
	e.one("switchboard_handshakes_refused_total", "counter", "Connections refused by the authorization or the policy.", float64(st.HandshakesRefused))
	e.one("switchboard_descriptors_exhausted_total", "counter", "Times the node found no descriptor free to accept or set up a connection.", float64(st.DescriptorsExhausted))
	e.family("switchboard_refusals_total", "counter", "Actions refused by the authorization or the policy, on every path, by action.")
	for a := switchboard.ActionConnect; a <= switchboard.ActionMonitor; a++ {
		e.sample("switchboard_refusals_total", labels{"action", a.String()}, float64(st.Refusals[a]))
	}
	e.one("switchboard_calls_total", "counter", "Requests served by node services.", float64(st.Calls))
	e.one("switchboard_events_total", "counter", "Events offered to clients.", float64(st.Events))
	e.one("switchboard_protocol_violations_total", "counter", "Connections closed for breaking the protocol.", float64(st.Violations))
	e.one("switchboard_evictions_total", "counter", "Clients disconnected as slow consumers.", float64(st.Evictions))
	e.one("switchboard_events_dropped_total", "counter", "Events dropped for slow clients.", float64(st.Dropped))
	e.one("switchboard_late_replies_total", "counter", "Replies discarded because their caller had gone (deadline, cancel, disconnect).", float64(st.LateReplies))
	e.one("switchboard_stuck_handlers", "gauge", "Handlers still running for connections released without them (they ignore their context).", float64(st.StuckHandlers))
	e.one("switchboard_actor_handler_panics_total", "counter", "Panics of actor handlers, each answered with an internal error.", float64(st.ActorPanics))

	conns := src.Connections()
	per := []struct {
		name, typ, help string
		v               func(c *switchboard.ConnInfo) float64
	}{
		{"switchboard_connection_calls_total", "counter", "Calls the connection made to node services.", func(c *switchboard.ConnInfo) float64 { return float64(c.Calls) }},
		{"switchboard_connection_sends_total", "counter", "One-way sends the connection made.", func(c *switchboard.ConnInfo) float64 { return float64(c.Sends) }},
		{"switchboard_connection_replies_total", "counter", "Replies the connection received.", func(c *switchboard.ConnInfo) float64 { return float64(c.Replies) }},
		{"switchboard_connection_events_total", "counter", "Events delivered to the connection.", func(c *switchboard.ConnInfo) float64 { return float64(c.Events) }},
		{"switchboard_connection_events_dropped_total", "counter", "Events dropped for the connection.", func(c *switchboard.ConnInfo) float64 { return float64(c.Dropped) }},
		{"switchboard_connection_received_bytes_total", "counter", "Payload bytes the node received from the connection.", func(c *switchboard.ConnInfo) float64 { return float64(c.BytesIn) }},
		{"switchboard_connection_sent_bytes_total", "counter", "Payload bytes the node sent to the connection.", func(c *switchboard.ConnInfo) float64 { return float64(c.BytesOut) }},
		{"switchboard_connection_protocol_violations_total", "counter", "Protocol violations by the connection.", func(c *switchboard.ConnInfo) float64 { return float64(c.Violations) }},
		{"switchboard_connection_late_replies_total", "counter", "Replies the node dropped on the connection's account: results that came after it left or its actor call was forgotten, answers it gave peers that had given up.", func(c *switchboard.ConnInfo) float64 { return float64(c.LateReplies) }},
		{"switchboard_connection_handler_panics_total", "counter", "Handler panics while serving the connection.", func(c *switchboard.ConnInfo) float64 { return float64(c.Panics) }},
		{"switchboard_connection_events_queued", "gauge", "Events queued in the node behind the connection's full event ring.", func(c *switchboard.ConnInfo) float64 { return float64(c.EventsQueued) }},
		{"switchboard_connection_pending_replies", "gauge", "The connection's calls to peers waiting for a reply.", func(c *switchboard.ConnInfo) float64 { return float64(c.Pending) }},
		{"switchboard_connection_age_seconds", "gauge", "Seconds since the connection was accepted.", func(c *switchboard.ConnInfo) float64 { return now.Sub(c.Since).Seconds() }},
	}
	for _, m := range per {
		e.family(m.name, m.typ, m.help)
		for i := range conns {
			e.sample(m.name, connLabels(&conns[i]), m.v(&conns[i]))
		}
	}
	e.family("switchboard_connection_ring_fill_bytes", "gauge", "Bytes waiting in a connection's ring.")
	for i := range conns {
		c := &conns[i]
		for r, fill := range []int{c.RequestFill, c.ResponseFill, c.EventFill} {
			e.sample("switchboard_connection_ring_fill_bytes", append(connLabels(c), "ring", ringNames[r]), float64(fill))
		}
	}
	e.family("switchboard_connection_ring_capacity_bytes", "gauge", "Capacity of a connection's ring.")
	for i := range conns {
		c := &conns[i]
		for r, size := range c.RingBytes {
			e.sample("switchboard_connection_ring_capacity_bytes", append(connLabels(c), "ring", ringNames[r]), float64(size))
		}
	}
	if e.err != nil {
		return e.err
	}
	return bw.Flush()
}

var ringNames = [3]string{"request", "response", "event"}

// labels are name, value pairs.
type labels []string

func connLabels(c *switchboard.ConnInfo) labels {
	return labels{"address", c.Address, "client", c.Name, "uid", strconv.FormatUint(uint64(c.Cred.UID), 10)}
}

// expo writes the exposition; the first write error sticks.
type expo struct {
	w   *bufio.Writer
	err error
}

func (e *expo) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func (e *expo) family(name, typ, help string) {
	e.printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (e *expo) one(name, typ, help string, v float64) {
	e.family(name, typ, help)
	e.sample(name, nil, v)
}

func (e *expo) sample(name string, ls labels, v float64) {
	var b strings.Builder
	b.WriteString(name)
	if len(ls) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(ls); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(ls[i])
			b.WriteString(`="`)
			b.WriteString(labelEscaper.Replace(ls[i+1]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	b.WriteByte('\n')
	e.printf("%s", b.String())
}

// labelEscaper escapes a label value as the text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// metricsServer serves /metrics on its own listener and mux. Its one
// goroutine is owned by it: stop ends it and waits.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// listenMetrics listens on addr (HOST:PORT, or unix:PATH: a stale socket
// file left by a dead process is replaced) and serves the exposition.
func listenMetrics(addr string, src statsSource, log *slog.Logger) (*metricsServer, error) {
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", expositionType)
		if err := writeMetrics(w, src, time.Now()); err != nil {
			log.Debug("metrics scrape", slog.String("error", err.Error()))
		}
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "Switchboard node: metrics at /metrics")
	})
	m := &metricsServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
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
