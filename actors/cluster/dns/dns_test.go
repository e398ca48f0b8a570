package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster"
	"golang.org/x/net/dns/dnsmessage"
)

// server answers A queries for one name over UDP on loopback, from a
// set of addresses the test changes: none is NXDOMAIN; failing makes it
// answer SERVFAIL.
type server struct {
	conn *net.UDPConn
	name dnsmessage.Name

	mu      sync.Mutex
	ips     []netip.Addr
	failing bool
	queries int
}

func startServer(t *testing.T, name string) *server {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{conn: conn, name: dnsmessage.MustNewName(name + ".")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:n]); out != nil {
				conn.WriteToUDP(out, from)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

func (s *server) set(failing bool, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing, s.ips = failing, nil
	for _, ip := range ips {
		s.ips = append(s.ips, netip.MustParseAddr(ip))
	}
}

func (s *server) answer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	switch {
	case s.failing:
		rh.RCode = dnsmessage.RCodeServerFailure
	case q.Name != s.name || len(s.ips) == 0:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	if rh.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
		for _, ip := range s.ips {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1},
				dnsmessage.AResource{A: ip.As4()})
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// resolver asks s only.
func (s *server) resolver() *net.Resolver {
	addr := s.conn.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// TestDiscoveryDNS: the name's A records, at the node's own port, are
// reported when they change (not on every lookup); a name that does not
// exist lists no node; a failing server keeps what was found last; Run
// returns when its context ends.
func TestDiscoveryDNS(t *testing.T) {
	s := startServer(t, "nodes.sb.test")
	s.set(false, "10.0.0.2", "10.0.0.1")
	d, err := New(Config{Name: "nodes.sb.test", Interval: 100 * time.Millisecond, Resolver: s.resolver()})
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
	s.set(false, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	next("10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946")
	s.set(false) // NXDOMAIN
	next()
	s.set(false, "10.0.0.4")
	next("10.0.0.4:7946")

	// A failing server: nothing reported for several lookups.
	s.mu.Lock()
	s.failing, s.queries = true, 0
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		q := s.queries
		s.mu.Unlock()
		if q >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups in 10 s", q)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case got := <-sets:
		t.Fatalf("while the server failed, found %q: want what was found last kept", got)
	default:
	}
	s.set(false, "10.0.0.4", "10.0.0.5")
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
	s := startServer(t, "nodes.sb.test")
	s.set(false, "10.0.0.1")
	d, err := New(Config{Name: "nodes.sb.test", Port: 9000, Interval: 100 * time.Millisecond, Resolver: s.resolver()})
	if err != nil {
		t.Fatal(err)
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
	d, _ = New(Config{Name: "nodes.sb.test", Resolver: s.resolver()})
	if err := d.Run(ctx, cluster.Member{Address: "nohost"}, func([]string) {}); err == nil {
		t.Fatal("Run with no port anywhere: no error")
	}
	for _, c := range []Config{{}, {Name: "x", Port: -1}, {Name: "x", Port: 70000}, {Name: "x", Interval: time.Millisecond}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
