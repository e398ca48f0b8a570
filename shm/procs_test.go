package shm

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// The policy: at every P, blocks of calm windows judged on their
// averages (CPU, paid spins, parks: under half the rates that move it up);
// at one P, back up after two busy windows in a row, whichever way they
// are busy.
func TestProcsPolicy(t *testing.T) {
	g := procsPolicy{calmNeeded: 3}
	const w = 0.01 // a window's seconds
	steps := []struct {
		cpu, paid, parks float64 // in the window
		one              bool
	}{
		{0.1 * w, 0, 0, false},
		{0.1 * w, 0, 0, false},
		{2.0 * w, 0, 0, false}, // the block averaged 0.73 cores: stay
		{0.1 * w, 0, 0, false},
		{0.1 * w, 0, 0, false},
		{0.9 * w, 31, 0, false}, // over 1000 paid spins a second on average (half the bar up): stay
		{0.1 * w, 0, 0, false},
		{0.1 * w, 0, 0, false},
		{0.1 * w, 0, 230, false}, // over 7,500 parks a second on average: stay
		{0.6 * w, 0, 0, false},
		{0.6 * w, 14, 110, false},
		{0.6 * w, 14, 110, true}, // under every bar on average: one P
		{0.9 * w, 0, 0, true},    // one busy window: not yet
		{0.1 * w, 0, 0, true},
		{0.9 * w, 0, 0, true},
		{0.9 * w, 0, 0, false}, // two in a row: back up
		{0, 0, 0, false},
		{0, 0, 0, false},
		{0, 0, 0, true},
		{0, 20, 0, true},
		{0, 0, 150, false}, // paid spins, then parks: busy twice in a row
		{0, 0, 0, false},
		{0, 0, 0, false},
		{0, 0, 0, true},
	}
	for i, s := range steps {
		if got := g.step(w, s.cpu, s.paid, s.parks); got != s.one {
			t.Fatalf("step %d (%+v): one P %v, want %v", i, s, got, s.one)
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
			for range ringBatch {
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

// At one P a park follows no spin: it leaves the budget as it was, so a
// caller whose replies are slow at one P spins in full again after the
// move back up.
func TestSpinBudgetKeptAtOneP(t *testing.T) {
	const most = 20 * time.Microsecond
	s := NewReplySpinner(most)
	oneP.Store(true)
	defer oneP.Store(false)
	for range 8 {
		if s.Spin(func() bool { return false }) {
			t.Fatal("a spin at one P won")
		}
		s.Woke(time.Millisecond) // a slow reply, after no spin
	}
	if got := s.Budget(); got != most {
		t.Fatalf("budget %v after parks at one P, want %v", got, most)
	}
}
