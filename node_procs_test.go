package switchboard

import (
	"runtime"
	"testing"
)

// A node with WithAdaptiveProcs governs the process's Ps while it serves,
// a second one in the same process does not, and Close leaves GOMAXPROCS
// as the node found it. (shm's TestGovernProcs tests the moves.)
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
	n.Close()
	if got := runtime.GOMAXPROCS(0); got != most {
		t.Fatalf("GOMAXPROCS %d after Close, want %d", got, most)
	}
	if st := n.Procs(); st.Governing {
		t.Fatalf("still governing after Close: %+v", st)
	}
}
