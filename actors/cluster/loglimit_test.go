package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
)

// TestLogLimit: the first line of a kind goes at once, the others within
// logEvery are held back, and the next line that goes counts everything
// since the last, what each stood for added up.
func TestLogLimit(t *testing.T) {
	var l logLimit
	t0 := time.Unix(1000, 0)
	if ok, since := l.allow(t0, 1); !ok || since != 1 {
		t.Fatalf("first line: %v %d, want it to go, standing for 1", ok, since)
	}
	for i, at := range []time.Duration{0, time.Second, logEvery - time.Nanosecond} {
		if ok, _ := l.allow(t0.Add(at), 3); ok {
			t.Fatalf("line %d, %v after the first: went, want it held", i+2, at)
		}
	}
	if ok, since := l.allow(t0.Add(logEvery), 2); !ok || since != 11 {
		t.Fatalf("a line logEvery after the first: %v %d, want it to go, standing for 3+3+3+2", ok, since)
	}
	if ok, _ := l.allow(t0.Add(logEvery+time.Second), 1); ok {
		t.Fatal("a line a second after the second went; want it held")
	}
}

// TestLimitedfLines: a flood of one kind of event (a peer refused over
// and over) makes one log line, then one per logEvery, which says how
// many it stands for; another kind has its own limit.
func TestLimitedfLines(t *testing.T) {
	var buf bytes.Buffer
	f := &Federation{cfg: Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))}}
	for range 100 {
		f.limitedf(&f.logs.refusedOut, "cluster: refused node %s", "n9")
	}
	f.limitedf(&f.logs.calls, "cluster: refused a call")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "refused node n9") || strings.Contains(lines[0], "such") || !strings.Contains(lines[1], "refused a call") {
		t.Fatalf("after 100 refusals and a call: %d lines, want 2 (one of each kind, the first standing for itself):\n%s", len(lines), buf.String())
	}
	buf.Reset()
	f.logs.refusedOut.mu.Lock()
	f.logs.refusedOut.last = f.logs.refusedOut.last.Add(-logEvery) // as if logEvery went by
	f.logs.refusedOut.mu.Unlock()
	f.limitedf(&f.logs.refusedOut, "cluster: refused node %s", "n9")
	if got := buf.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "(100 such since the last such line)") {
		t.Fatalf("the next line, logEvery later: %q; want one line standing for the 99 held back and itself", got)
	}
}

// TestLogFlush: a burst that ended is summed up once logEvery has passed
// since its last line (the heartbeat flushes), and only then; nothing is
// said of a kind that held nothing back.
func TestLogFlush(t *testing.T) {
	var buf bytes.Buffer
	f := &Federation{cfg: Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))}}
	for range 5 {
		f.limitedf(&f.logs.badSecret, "cluster: refused node %s", "n9")
	}
	f.limitedf(&f.logs.calls, "cluster: refused a call")
	buf.Reset()
	now := time.Now()
	f.flushLogs(now)
	if buf.Len() != 0 {
		t.Fatalf("flushed before logEvery passed: %q", buf.String())
	}
	f.flushLogs(now.Add(logEvery))
	got := buf.String()
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, "4 more Hellos refused for want of the cluster's secret") {
		t.Fatalf("logEvery later: %q; want one line for the 4 held back (none for the call: nothing held)", got)
	}
	buf.Reset()
	f.flushLogs(now.Add(3 * logEvery))
	if buf.Len() != 0 {
		t.Fatalf("flushed twice: %q", buf.String())
	}
}

// TestHelloFloodLogsOnce: Hellos without the cluster's secret from an
// address this node does not dial, sent as fast as one can, are each
// counted and make one log line; nothing is sent back (no Bye: the
// Federation is not even started, which a send would need).
func TestHelloFloodLogsOnce(t *testing.T) {
	var buf bytes.Buffer
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:0", Advertise: "127.0.0.1:7999", SecretFile: testSecret(t),
		Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		f.onHello(uint64(1000+i), &linkpb.Hello{Version: protoVersion, Cluster: "c", Node: "x", Incarnation: "i", Address: fmt.Sprintf("127.0.0.1:%d", 20000+i)})
	}
	st := f.Stats()
	if st.BadSecret != 100 || st.RefusedOut != 100 {
		t.Fatalf("counted %d without the secret, %d refused; want 100 and 100", st.BadSecret, st.RefusedOut)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != 1 || !strings.Contains(buf.String(), "does not know the cluster's secret") {
		t.Fatalf("%d log lines for 100 Hellos without the secret, want 1:\n%s", lines, buf.String())
	}
}
