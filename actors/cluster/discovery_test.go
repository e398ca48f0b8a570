package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
)

// TestDiscoveryFound: the addresses a Discovery lists are dialled like
// configured peers (tried at once, even one in the backoff of a failure,
// and never forgotten while listed), except one that refused this node;
// this node's own is skipped; what is not a dialable HOST:PORT is ignored,
// counted once however often it is listed; an address no longer listed is
// kept while linked, and forgotten a while after it is not, like a learned
// one.
func TestDiscoveryFound(t *testing.T) {
	const self, a1, a2, a3, a4, a5 = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004", "127.0.0.1:7005"
	f, err := New(Config{Cluster: "c", Listen: self, SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	// a3 learned from a Hello earlier and in a long backoff; a4 refused.
	f.mu.Lock()
	old := f.dialLocked(a3)
	old.backoff, old.next = maxBackoff, time.Now().Add(maxBackoff)
	refused := f.dialLocked(a4)
	refused.refused = "another node's name"
	f.mu.Unlock()

	f.found([]string{self, a1, a2, a3, a4, "no-port", "0.0.0.0:7006", a1})
	f.found([]string{self, a1, a2, a3, a4, "no-port", "0.0.0.0:7006"})
	st := f.Stats()
	if st.Discovered != 4 || st.BadDiscovered != 2 {
		t.Fatalf("discovered %d, bad %d: want 4 and 2 (each bad address counted once)", st.Discovered, st.BadDiscovered)
	}
	f.mu.Lock()
	if _, ok := f.dial[self]; ok || len(f.dial) != 4 {
		t.Errorf("dial table %v: want a1 to a4 and not this node's own address", f.dial)
	}
	if old.backoff != 0 || old.next.After(time.Now()) || !old.discovered {
		t.Errorf("a3 listed: backoff %v, next in %v: want tried at once", old.backoff, time.Until(old.next))
	}
	if refused.refused == "" {
		t.Errorf("a4 listed: its refusal was forgotten (it would be sent a Hello, refused and logged at each change)")
	}
	f.mu.Unlock()
	for _, l := range f.Links() {
		if !l.Configured || !l.Discovered {
			t.Errorf("%s: listed, but reported configured %v, discovered %v", l.Address, l.Configured, l.Discovered)
		}
	}

	// a5, brought by the discovery alone, is forgotten once unlisted.
	f.found([]string{a1, a2, a3, a4, a5})
	f.found([]string{a1, a2, a3, a4})
	f.mu.Lock()
	if f.dial[a5] != nil {
		t.Errorf("a5, discovered, not linked, unlisted: still in the dial table")
	}
	f.mu.Unlock()

	// a2 linked; then only a1 listed: a2 (linked), a3 and a4 (learned
	// before) are kept a while.
	f.mu.Lock()
	d := f.dial[a2]
	p := newPeer(f, 9, d.session, &linkpb.Hello{Node: "n2", Incarnation: "i-n2", Address: a2})
	p.up = true
	f.bySession[9], f.byName["n2"], f.byAddr[a2] = p, p, p
	f.mu.Unlock()
	f.found([]string{a1})
	for _, l := range f.Links() {
		if want := l.Address == a1; l.Discovered != want {
			t.Errorf("%s after only a1 was listed: reported discovered %v", l.Address, l.Discovered)
		}
	}
	age := func() {
		f.mu.Lock()
		for _, d := range f.dial {
			d.downSince = time.Now().Add(-2 * learnedKept)
			d.probing = true // no probe
		}
		f.dialPass(time.Now())
		f.mu.Unlock()
	}
	f.mu.Lock()
	if len(f.dial) != 4 {
		t.Errorf("dial table %v just after a2, a3 and a4 were unlisted: want them kept a while", f.dial)
	}
	f.mu.Unlock()
	age()
	f.mu.Lock()
	if len(f.dial) != 2 || f.dial[a1] == nil || f.dial[a2] == nil {
		t.Errorf("dial table %v a minute after: want a1 (listed) and a2 (linked)", f.dial)
	}
	f.mu.Unlock()
	f.declareDown(p, "gone", 0)
	age()
	f.mu.Lock()
	if len(f.dial) != 1 || f.dial[a1] == nil {
		t.Errorf("dial table %v a minute after a2's link ended: want only a1", f.dial)
	}
	f.mu.Unlock()
	if st := f.Stats(); st.Discovered != 1 {
		t.Errorf("discovered %d, want 1", st.Discovered)
	}
}

// TestDiscoveryBounds: a Discovery fills at most maxDiscovered entries
// of the dial table (the rest counted once while listed); an address it
// brought and no longer lists is forgotten at once unless linked; one that
// found the table full is taken when there is room.
func TestDiscoveryBounds(t *testing.T) {
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:7000", SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return fmt.Sprintf("127.%d.%d.%d:7946", i>>16&255, i>>8&255, i&255) }
	var many []string
	for i := range maxDiscovered + 6 {
		many = append(many, addr(i))
	}
	f.found(many)
	f.found(many)
	if st := f.Stats(); st.Discovered != maxDiscovered || st.DialFull != 6 {
		t.Fatalf("listing %d: %d discovered, %d counted ignored; want %d and 6", len(many), st.Discovered, st.DialFull, maxDiscovered)
	}
	// Another list of as many: the first's are gone from the table.
	f.found(many[maxDiscovered:])
	f.mu.Lock()
	if len(f.dial) != 6 {
		t.Errorf("%d addresses to dial after the list changed to 6", len(f.dial))
	}
	f.mu.Unlock()

	// The table full of learned addresses: the one discovered waits for
	// room, and is taken at the heartbeat that makes some.
	f.found(nil)
	f.mu.Lock()
	for i := range maxDial {
		d := f.dialLocked(addr(1<<20 + i))
		d.probing = true
		if i < 10 {
			d.downSince = time.Now().Add(-2 * learnedKept)
		}
	}
	f.mu.Unlock()
	f.found([]string{addr(7)})
	if st := f.Stats(); st.Discovered != 0 || st.DialFull != 7 {
		t.Fatalf("with the table full: %d discovered, %d counted ignored; want 0 and 7", st.Discovered, st.DialFull)
	}
	f.beat(time.Now()) // forgets the 10 learned a while ago
	f.mu.Lock()
	d := f.dial[addr(7)]
	f.mu.Unlock()
	if d == nil || !d.discovered {
		t.Fatalf("room made in the table: the discovered address is still not in it")
	}
	if st := f.Stats(); st.Discovered != 1 {
		t.Errorf("%d discovered, want 1", st.Discovered)
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
	if got, want := f.DiscoveryName(), "*cluster.failingDiscovery"; got != want {
		t.Errorf("DiscoveryName() = %q, want %q (its type: it has no String)", got, want)
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

// TestDiscoveryRetryBackoff: failed runs in a row wait minBackoff, then
// twice as long each time up to discoveryBackoff; a run that lasted longer
// than that before it failed starts again from minBackoff.
func TestDiscoveryRetryBackoff(t *testing.T) {
	backoff := minBackoff
	var waits []time.Duration
	for range 10 {
		var wait time.Duration
		wait, backoff = discoveryRetry(backoff, time.Millisecond)
		waits = append(waits, wait)
	}
	want := []time.Duration{minBackoff, 2 * minBackoff, 4 * minBackoff, 8 * minBackoff, 16 * minBackoff, 32 * minBackoff, 64 * minBackoff}
	for len(want) < 10 {
		want = append(want, discoveryBackoff)
	}
	for i := range want {
		want[i] = min(want[i], discoveryBackoff)
	}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits after quick failures %v, want %v", waits, want)
	}
	if wait, next := discoveryRetry(backoff, discoveryBackoff+time.Second); wait != minBackoff || next != 2*minBackoff {
		t.Errorf("after a run that lasted: wait %v then %v, want %v then %v", wait, next, minBackoff, 2*minBackoff)
	}
	if wait, _ := discoveryRetry(backoff, discoveryBackoff/2); wait != discoveryBackoff {
		t.Errorf("after a run of %v: wait %v, want still %v (the same episode)", discoveryBackoff/2, wait, discoveryBackoff)
	}
}
