package shm

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// The policy: down to one P only after calm windows in a row (low CPU, no
// spin that pays), and back up at the first window that is busy either
// way; a busy window in the calm starts the count again.
func TestProcsPolicy(t *testing.T) {
	g := procsPolicy{calmNeeded: 3}
	steps := []struct {
		cores, paid float64
		one         bool
	}{
		{0.1, 0, false},
		{0.1, 0, false},
		{0.1, govPaidRate, false}, // spins pay: the count starts again
		{0.1, 0, false},
		{govDownCPU, 0, false}, // most of a core at two Ps: again
		{0.5, 0, false},
		{0.5, 0, false},
		{0.5, govPaidRate - 1, true}, // the third calm window in a row
		{0.8, 0, true},               // nearly busy, not quite
		{0.9, 0, false},              // busy at one P: back up at once
		{0.1, 0, false},
		{0.1, 0, false},
		{0.1, 0, true},
		{0.1, govPaidRate, false}, // a spin would pay: back up at once
	}
	for i, s := range steps {
		if got := g.step(s.cores, s.paid); got != s.one {
			t.Fatalf("step %d (%.2f cores, %.0f paid/s): one P %v, want %v", i, s.cores, s.paid, got, s.one)
		}
	}
}

// A governed process that idles goes down to one P and stops spinning;
// spins that would pay bring it back up within a window or two; the end of
// the governor leaves GOMAXPROCS as it found it.
func TestGovernProcs(t *testing.T) {
	most := runtime.GOMAXPROCS(0)
	if most < 2 || availableCPUs() < 2 {
		t.Skipf("GOMAXPROCS %d, %d CPUs: the governor needs two of each", most, availableCPUs())
	}
	before := ReadProcsState()
	ctx, cancel := context.WithCancel(context.Background())
	wait, ok := governProcs(ctx, 5*time.Millisecond, 4)
	if !ok {
		t.Fatal("the governor did not start")
	}
	defer func() { cancel(); wait() }()
	if again, ok := governProcs(ctx, time.Millisecond, 1); ok {
		t.Fatal("a second governor started beside the first")
	} else {
		again() // returns at once
	}
	waitFor(t, "one P", func() bool { return runtime.GOMAXPROCS(0) == 1 && ReadProcsState().One })
	if s := NewSpinner(time.Millisecond); s.Spin(func() bool { return true }) {
		t.Fatal("a spinner spun at one P")
	}
	if d := DefaultSpin(); d != defaultSpin {
		t.Fatalf("DefaultSpin %v at one P under the governor, want %v (its ceiling has two)", d, defaultSpin)
	}
	// Parks shorter than a spin, as a peer answering at once makes them.
	stop := make(chan struct{})
	parked := make(chan struct{})
	go func() {
		defer close(parked)
		s := NewSpinner(defaultSpin)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for range paidBatch {
				s.Woke(time.Microsecond)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	waitFor(t, "all the Ps back", func() bool { return runtime.GOMAXPROCS(0) == most && !ReadProcsState().One })
	close(stop)
	<-parked
	st := ReadProcsState()
	if !st.Governing || st.Downs-before.Downs < 1 || st.Ups-before.Ups < 1 || st.AtOne <= before.AtOne {
		t.Fatalf("state %+v (before: %+v)", st, before)
	}
	waitFor(t, "one P again", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	cancel()
	wait()
	if n := runtime.GOMAXPROCS(0); n != most {
		t.Fatalf("GOMAXPROCS %d after the governor stopped, want %d", n, most)
	}
	if st := ReadProcsState(); st.Governing || st.One {
		t.Fatalf("state %+v after the governor stopped", st)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 10 s (GOMAXPROCS %d, %+v)", what, runtime.GOMAXPROCS(0), ReadProcsState())
		}
		time.Sleep(time.Millisecond)
	}
}
