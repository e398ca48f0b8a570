package cluster

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCloseEndsEverything: a started Federation's Close is idempotent and
// leaves no goroutine of its own or of remote's running. It starts remote
// in this process: the only test that does (the others run nodes as
// processes), since remote sets grpclog's global logger.
func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:0", Advertise: "127.0.0.1:7999", Peers: []string{"127.0.0.1:7998"},
		SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("n1", "i1", nopHost{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Send("n2", []byte("x")); err != ErrNodeNotUp {
		t.Fatalf("Send to a node not up: %v", err)
	}
	time.Sleep(600 * time.Millisecond) // a few heartbeats of Hellos to a peer that is not there
	closing := time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(closing); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	// Every goroutine of the link layer's own is gone; what remote's
	// writers leave (see shutdownRemote) is counted in the log.
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var ours []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "actors/cluster.(*") || strings.Contains(g, "actors/cluster.linkProcess") {
				ours = append(ours, g)
			}
		}
		if len(ours) == 0 {
			t.Logf("%d goroutines before Start, %d after Close (remote's writers and gRPC's)", before, runtime.NumGoroutine())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the link layer's goroutines outlive Close:\n%s", strings.Join(ours, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLinkDeadPeers: addresses where nothing listens are probed with a
// backoff (250 ms doubling to 10 s) and never handed to remote, so they
// cost neither a Hello every heartbeat nor remote's redials, which leak
// a gRPC connection and its goroutines each time.
func TestLinkDeadPeers(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1 := startMember(t, "n1", "an1", addrs["n1"], []string{addrs["n2"], addrs["n3"]}, memberOpts{})
	time.Sleep(2 * time.Second)
	var early, late int
	fmt.Sscan(n1.do("goroutines"), &early)
	time.Sleep(6 * time.Second)
	fmt.Sscan(n1.do("goroutines"), &late)
	s := stats(t, n1)
	t.Logf("over 8 s, two dead peers: %d probes failed, %d Hellos sent; goroutines %d at 2 s, %d at 8 s",
		s.DialFailures, s.Dials, early, late)
	// Every heartbeat would be 32 tries per address; the backoff makes
	// it 6 at most (0, 0.25, 0.75, 1.75, 3.75, 7.75 s).
	if s.DialFailures == 0 || s.DialFailures > 2*8 || s.Dials != 0 {
		t.Fatalf("%d failed probes and %d Hellos to two dead addresses in 8 s: want a few probes, no Hello", s.DialFailures, s.Dials)
	}
	if late > early+4 {
		t.Fatalf("goroutines grew from %d to %d dialling dead addresses", early, late)
	}
}
