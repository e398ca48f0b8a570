package cluster

import (
	"fmt"
	"sync"
	"time"
)

// logEvery is the least time between two log lines of one kind that
// another node, anyone who reaches the link's port or a registry can
// provoke at will (a refused Hello, an ignored address, a refused call):
// the first goes at once; the others within logEvery are held back, and
// the next line that goes says how many there were. Stats counts each.
const logEvery = 10 * time.Second

// A logLimit holds back the lines of one kind that come sooner than
// logEvery after the last it let through. The zero value is ready.
type logLimit struct {
	mu   sync.Mutex
	last time.Time // when the last line went (zero: none yet)
	held uint64    // what came since, the lines held back and what they stood for
}

// allow takes n more things to report (the events one line stands for:
// 1 for one refusal, a count of addresses for a discovery's list) and
// reports whether a line may go at now, and if so how many things came
// since the last line that went, n included.
func (l *logLimit) allow(now time.Time, n uint64) (ok bool, since uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held += n
	if !l.last.IsZero() && now.Sub(l.last) < logEvery {
		return false, 0
	}
	since, l.held, l.last = l.held, 0, now
	return true, since
}

// flush reports how many things came since the last line that went, and
// forgets them, if there are any and logEvery has passed since that line
// (a burst that ended: no next line would say how many); else 0.
func (l *logLimit) flush(now time.Time) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == 0 || now.Sub(l.last) < logEvery {
		return 0
	}
	held := l.held
	l.held, l.last = 0, now
	return held
}

// flushLogs says, for each kind of line, how many came since the last
// line of that kind if a burst ended unsaid (flush). On the heartbeat.
func (f *Federation) flushLogs(now time.Time) {
	for _, k := range [...]struct {
		l    *logLimit
		what string
	}{
		{&f.logs.plain, "Hellos ignored (a non-loopback address, and this node has no TLS)"},
		{&f.logs.badSecret, "Hellos refused for want of the cluster's secret"},
		{&f.logs.refusedOut, "Hellos refused"},
		{&f.logs.refusedIn, "refusals of this node"},
		{&f.logs.calls, "unary calls refused"},
		{&f.logs.panics, "streams that broke remote"},
		{&f.logs.protocol, "links that broke the protocol"},
		{&f.logs.hostPanics, "messages the host panicked on"},
		{&f.logs.discovery, "addresses the discovery listed that were ignored"},
	} {
		if n := k.l.flush(now); n > 0 {
			f.logf("cluster: %d more %s since the last such line", n, k.what)
		}
	}
}

// limitedf logs one event through l: the line, if l lets it go, says how
// many like it it stands for when that is more than this one.
func (f *Federation) limitedf(l *logLimit, format string, args ...any) {
	ok, since := l.allow(time.Now(), 1)
	if !ok {
		return
	}
	if since > 1 {
		f.logf("%s (%d such since the last such line)", fmt.Sprintf(format, args...), since)
		return
	}
	f.logf(format, args...)
}
