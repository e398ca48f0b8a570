package cluster

import (
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
			if strings.Contains(g, "actors/cluster.(*") || strings.Contains(g, "actors/cluster.linkReceiver") {
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
