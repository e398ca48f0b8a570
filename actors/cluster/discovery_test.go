package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestDiscoveryFound: the addresses a Discovery lists are dialled like
// configured peers (tried at once, even one that refused this node or
// was in a backoff, and never forgotten while listed); this node's own is
// skipped; what is not a dialable HOST:PORT is counted and ignored; an
// address no longer listed is forgotten a while after, like a learned one.
func TestDiscoveryFound(t *testing.T) {
	const self, a1, a2, a3 = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
	f, err := New(Config{Cluster: "c", Listen: self, SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	// a3 learned from a Hello earlier, refused, in a long backoff.
	f.mu.Lock()
	old := f.dialLocked(a3)
	old.refused, old.backoff, old.next = "another node's name", maxBackoff, time.Now().Add(maxBackoff)
	f.mu.Unlock()

	f.found([]string{self, a1, a2, a3, "no-port", "0.0.0.0:7004", a1})
	st := f.Stats()
	if st.Discovered != 3 || st.BadDiscovered != 2 {
		t.Fatalf("discovered %d, bad %d: want 3 and 2", st.Discovered, st.BadDiscovered)
	}
	f.mu.Lock()
	if _, ok := f.dial[self]; ok || len(f.dial) != 3 {
		t.Errorf("dial table %v: want a1, a2, a3 and not this node's own address", f.dial)
	}
	if old.refused != "" || old.backoff != 0 || old.next.After(time.Now()) || !old.discovered {
		t.Errorf("a3 listed: refused %q, backoff %v, next in %v: want tried at once", old.refused, old.backoff, time.Until(old.next))
	}
	f.mu.Unlock()
	for _, l := range f.Links() {
		if !l.Configured {
			t.Errorf("%s: listed, but not reported as configured", l.Address)
		}
	}

	// a2 and a3 no longer listed: kept a while, then forgotten; a1,
	// listed, kept however long it has been down.
	f.found([]string{a1})
	f.mu.Lock()
	for _, d := range f.dial {
		d.downSince = time.Now().Add(-2 * learnedKept)
		d.probing = true // no probe from beat
	}
	f.mu.Unlock()
	f.beat(time.Now())
	f.mu.Lock()
	if len(f.dial) != 1 || f.dial[a1] == nil {
		t.Errorf("dial table %v after a minute unlisted: want only a1", f.dial)
	}
	f.mu.Unlock()
	if st := f.Stats(); st.Discovered != 1 {
		t.Errorf("discovered %d, want 1", st.Discovered)
	}
}

// failingDiscovery fails its first runs, then reports one address until
// its context ends.
type failingDiscovery struct {
	fails atomic.Int32
	runs  atomic.Int32
	ended chan struct{}
}

func (d *failingDiscovery) Run(ctx context.Context, self Member, found func([]string)) error {
	if d.runs.Add(1) <= d.fails.Load() {
		return errors.New("registry unreachable")
	}
	found([]string{"127.0.0.1:7101", self.Address})
	<-ctx.Done()
	close(d.ended)
	return nil
}

// TestDiscoveryRetried: a Discovery whose Run fails is called again after
// a backoff (each failure counted); Close ends the run that succeeded and
// waits for it.
func TestDiscoveryRetried(t *testing.T) {
	d := &failingDiscovery{ended: make(chan struct{})}
	d.fails.Store(2)
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:0", Advertise: "127.0.0.1:7998", Discovery: d, SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Start's part that concerns it, without remote (which one test
	// only starts in this process).
	f.self, f.incarnation = "n1", "i1"
	f.wg.Add(1)
	go f.discover()
	deadline := time.Now().Add(10 * time.Second)
	for f.Stats().Discovered != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d runs, %+v", d.runs.Load(), f.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := f.Stats(); st.DiscoveryFailures != 2 || d.runs.Load() != 3 {
		t.Errorf("%d runs, %d failures counted: want 3 and 2", d.runs.Load(), st.DiscoveryFailures)
	}
	f.Close()
	select {
	case <-d.ended:
	default:
		t.Fatal("Close returned before the Discovery's run ended")
	}
}
