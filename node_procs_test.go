package switchboard

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// A node with WithAdaptiveProcs governs the process's Ps from Listen to
// Close: an idle process goes down to one P, a second node in the same
// process does not govern, and Close leaves GOMAXPROCS as it was before.
// (shm's TestGovernProcs tests the moves.)
func TestAdaptiveProcsNode(t *testing.T) {
	most := runtime.GOMAXPROCS(0)
	if most < 2 || runtime.NumCPU() < 2 {
		t.Skipf("GOMAXPROCS %d, %d CPUs: the governor needs two of each", most, runtime.NumCPU())
	}
	plain := startNode(t)
	if st := plain.Procs(); st.Governing {
		t.Fatalf("a node without the option governs: %+v", st)
	}
	n := startNode(t, WithAdaptiveProcs())
	if st := n.Procs(); !st.Governing {
		t.Fatalf("a node with the option does not govern: %+v", st)
	}
	other := startNode(t, WithAdaptiveProcs())
	if st := other.Procs(); st.Governing {
		t.Fatalf("a second node governs beside the first: %+v", st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for runtime.GOMAXPROCS(0) != 1 || !n.Procs().One {
		if time.Now().After(deadline) {
			t.Fatalf("an idle process not at one P after 20 s: GOMAXPROCS %d, %+v", runtime.GOMAXPROCS(0), n.Procs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.Close()
	if got := runtime.GOMAXPROCS(0); got != most {
		t.Fatalf("GOMAXPROCS %d after Close, want %d", got, most)
	}
	if st := n.Procs(); st.Governing || st.One {
		t.Fatalf("governing after Close: %+v", st)
	}

	// Listen, then Close without Serve: the governor starts and stops.
	l, err := NewNode(WithSocket(filepath.Join(t.TempDir(), "l.sock")), WithAdaptiveProcs())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	if st := l.Procs(); !st.Governing {
		t.Fatalf("a node that listens does not govern: %+v", st)
	}
	l.Close()
	if st := l.Procs(); st.Governing {
		t.Fatalf("governing after Close: %+v", st)
	}
}
