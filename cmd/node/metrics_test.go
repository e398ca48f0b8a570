package main

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

type fakeStats struct {
	st    switchboard.NodeStats
	conns []switchboard.ConnInfo
}

func (f fakeStats) Stats() switchboard.NodeStats        { return f.st }
func (f fakeStats) Connections() []switchboard.ConnInfo { return f.conns }

func TestExpositionEscapesLabels(t *testing.T) {
	now := time.Unix(1000, 0)
	src := fakeStats{
		st: switchboard.NodeStats{Name: "n1", Started: now.Add(-90 * time.Second), Calls: 3,
			Refusals: map[switchboard.Action]uint64{switchboard.ActionPublish: 5}},
		conns: []switchboard.ConnInfo{{Address: "n1.c1", Name: "a \"quoted\"\\name\nline", Cred: switchboard.Cred{UID: 1000},
			Calls: 3, RingBytes: [3]int{1024, 2048, 4096}, EventFill: 8}},
	}
	var b strings.Builder
	if err := writeMetrics(&b, src, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"switchboard_uptime_seconds 90\n",
		"switchboard_calls_total 3\n",
		`switchboard_connection_calls_total{address="n1.c1",client="a \"quoted\"\\name\nline",uid="1000"} 3` + "\n",
		`switchboard_connection_ring_fill_bytes{address="n1.c1",client="a \"quoted\"\\name\nline",uid="1000",ring="event"} 8` + "\n",
		`switchboard_connection_ring_capacity_bytes{address="n1.c1",client="a \"quoted\"\\name\nline",uid="1000",ring="response"} 2048` + "\n",
		"# TYPE switchboard_connection_events_queued gauge\n",
		`switchboard_refusals_total{action="publish"} 5` + "\n",
		`switchboard_refusals_total{action="monitor"} 0` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}
