package dns

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster"
	"github.com/switchboard-ipc/switchboard/actors/cluster/dns/dnstest"
)

// TestDiscoveryDNS: the name's A records, at the node's own port, are
// reported when they change (not on every lookup); a name that does not
// exist lists no node; a failing server keeps what was found last; Run
// returns when its context ends.
func TestDiscoveryDNS(t *testing.T) {
	s := dnstest.Start(t, "127.0.0.1:0", "nodes.sb.test")
	s.Set(false, "10.0.0.2", "10.0.0.1")
	d, err := New(Config{Name: "nodes.sb.test", Interval: 100 * time.Millisecond, Resolver: s.Resolver()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sets := make(chan []string, 100)
	ended := make(chan error, 1)
	go func() {
		ended <- d.Run(ctx, cluster.Member{Cluster: "c", Node: "n1", Incarnation: "i", Address: "10.0.0.1:7946"},
			func(a []string) { sets <- a })
	}()
	next := func(want ...string) {
		t.Helper()
		select {
		case got := <-sets:
			if !slices.Equal(got, want) {
				t.Fatalf("found %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("nothing found in 10 s, want %q", want)
		}
	}
	next("10.0.0.1:7946", "10.0.0.2:7946")
	s.Set(false, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	next("10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946")
	s.Set(false) // NXDOMAIN
	next()
	s.Set(false, "10.0.0.4")
	next("10.0.0.4:7946")

	// A failing server: nothing reported for several lookups.
	s.Set(true, "10.0.0.4")
	failed := d.Failures()
	deadline := time.Now().Add(10 * time.Second)
	for d.Failures() < failed+3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed lookups counted in 10 s with the server failing", d.Failures()-failed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case got := <-sets:
		t.Fatalf("while the server failed, found %q: want what was found last kept", got)
	default:
	}
	s.Set(false, "10.0.0.4", "10.0.0.5")
	next("10.0.0.4:7946", "10.0.0.5:7946")
	select {
	case got := <-sets:
		t.Fatalf("reported %q again with nothing changed", got)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("Run ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
}

// TestDiscoveryDNSPort: a port given is used; without one, an address
// with no port is an error.
func TestDiscoveryDNSPort(t *testing.T) {
	s := dnstest.Start(t, "127.0.0.1:0", "nodes.sb.test")
	s.Set(false, "10.0.0.1")
	d, err := New(Config{Name: "nodes.sb.test", Port: 9000, Interval: 100 * time.Millisecond, Resolver: s.Resolver()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.String(), "dns nodes.sb.test, port 9000, every 100ms"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []string, 1)
	go d.Run(ctx, cluster.Member{Address: "10.0.0.9:7946"}, func(a []string) {
		select {
		case got <- a:
		default:
		}
	})
	select {
	case a := <-got:
		if !slices.Equal(a, []string{"10.0.0.1:9000"}) {
			t.Fatalf("found %q", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing found")
	}
	d, _ = New(Config{Name: "nodes.sb.test", Resolver: s.Resolver()})
	if err := d.Run(ctx, cluster.Member{Address: "nohost"}, func([]string) {}); err == nil {
		t.Fatal("Run with no port anywhere: no error")
	}
	for _, c := range []Config{{}, {Name: "nodes.svc:7946"}, {Name: "a..b"}, {Name: "x", Port: -1}, {Name: "x", Port: 70000}, {Name: "x", Interval: time.Millisecond}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
