package shm

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Spinning before parking saves the wake-up (a few microseconds) when the
// peer runs on another core and answers quickly. When both share one core
// it only delays the peer: measured here, a spin-first round trip with both
// processes pinned to one CPU is ten times slower than parking at once.

const (
	defaultSpin = 20 * time.Microsecond
	minSpin     = 1 * time.Microsecond
)

var availableCPUs = sync.OnceValue(func() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		return set.Count()
	}
	return runtime.NumCPU()
})

// DefaultSpin returns the spin limit used when none is given: 20µs when this
// process may run on at least two CPUs and GOMAXPROCS allows two running
// goroutines, otherwise 0 (park at once).
func DefaultSpin() time.Duration {
	if availableCPUs() < 2 || runtime.GOMAXPROCS(0) < 2 {
		return 0
	}
	return defaultSpin
}

// spinner is an adaptive spin budget: it doubles (up to max) each time a
// spin ends in success and halves (down to minSpin) each time it ends in a
// park, so a peer that stops answering quickly costs little CPU.
type spinner struct {
	max, cur time.Duration
}

func newSpinner(max time.Duration) spinner {
	if max < 0 {
		max = 0
	}
	return spinner{max: max, cur: max}
}

// spin polls ready until it returns true or the budget runs out.
func (s *spinner) spin(ready func() bool) bool {
	if s.cur <= 0 {
		return false
	}
	start := time.Now()
	for i := 1; ; i++ {
		if ready() {
			if s.cur < s.max {
				s.cur = min(2*s.cur, s.max)
			}
			return true
		}
		if i%64 == 0 && time.Since(start) > s.cur {
			s.cur = max(s.cur/2, min(minSpin, s.max))
			return false
		}
	}
}
