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
	if availableCPUs() < 2 || max(runtime.GOMAXPROCS(0), int(governed.Load())) < 2 {
		return 0
	}
	return defaultSpin
}

// spinner is an adaptive spin budget: it doubles (up to max) each time a
// spin ends in success and halves (down to minSpin) each time it ends in a
// park, so a peer that stops answering quickly costs little CPU. Parks
// that end sooner than max after they began suggest that a full spin would
// have won: every 16th such park, the budget goes back to max, to try.
// Without that, a budget shrunk below the peer's answer time would never
// grow again; doing it at every such park would spin in vain when the peer
// shares our CPU (it answers quickly only because we parked).
//
// With byWait (NewReplySpinner) a park does not halve it: the wait that
// follows, reported by woke, decides (shorter than max: back to max;
// longer: halved), and a park not reported changes nothing.
type spinner struct {
	max, cur time.Duration
	short    uint32 // parks shorter than max
	sweep    bool   // sweep the harvest list while spinning (Spinner)
	paid     uint32 // spins that won and short parks not yet added to spinsPaid
	parked   uint32 // parks not yet added to parks
	byWait   bool   // judge a spin that gave up by the wait that followed (NewReplySpinner)
}

func newSpinner(max time.Duration) spinner {
	if max < 0 {
		max = 0
	}
	return spinner{max: max, cur: max}
}

// woke reports how long a park that followed a failed spin lasted.
func (s *spinner) woke(parked time.Duration) {
	if s.max > 0 { // a waiter that never spins tells nothing of spins
		s.didPark()
		if parked < shortPark {
			s.didPay()
		}
	}
	if oneP.Load() {
		return // no spin came before this park: it judges none
	}
	if s.byWait {
		if parked < s.max {
			s.cur = s.max // a little longer would have won
		} else {
			s.cur = max(s.cur/2, min(minSpin, s.max))
		}
		return
	}
	if parked < s.max {
		if s.short++; s.short%16 == 0 {
			s.cur = s.max
		}
	}
}

// spin polls ready until it returns true or the budget runs out.
func (s *spinner) spin(ready func() bool) bool {
	if s.cur <= 0 || oneP.Load() {
		return false
	}
	start := time.Now()
	for i := 1; ; i++ {
		if ready() {
			s.didPay()
			if s.cur < s.max {
				s.cur = min(2*s.cur, s.max)
			}
			return true
		}
		if i%64 == 0 {
			if oneP.Load() {
				return false // the governor moved to one P: not a spin that failed
			}
			if time.Since(start) > s.cur {
				if !s.byWait {
					s.cur = max(s.cur/2, min(minSpin, s.max))
				}
				return false
			}
			if s.sweep {
				harvestSweep()
			}
		}
	}
}

// Spinner is the adaptive spin of Wait and WaitSpace, for a goroutine that
// waits on several rings at once: Spin polls a condition for up to the
// current budget. One goroutine at a time uses a Spinner.
type Spinner struct{ s spinner }

// NewSpinner returns a spinner whose budget is at most max (0 never spins).
func NewSpinner(max time.Duration) *Spinner {
	s := &Spinner{newSpinner(max)}
	s.s.sweep = true
	return s
}

// NewReplySpinner returns a spinner for a caller waiting for one reply,
// whose wait after a spin that gave up is reported (Woke): that wait, not
// the give-up, judges the budget. A reply that came less than max after
// the spin gave up puts the budget back to max (a longer spin would have
// won); a later one halves it (down to a microsecond), so that a caller
// whose replies take long stops burning a CPU on them. A give-up whose
// wait is not reported leaves the budget as it was. It does not sweep
// (Spin).
func NewReplySpinner(max time.Duration) *Spinner {
	s := &Spinner{newSpinner(max)}
	s.s.byWait = true
	return s
}

// Spin polls ready until it reports true (then Spin does too) or the
// budget runs out. Success doubles the budget, up to its maximum; failure
// halves it (a NewReplySpinner's waits for Woke).
//
// A goroutine about to spin has nothing to do but wait: first, and as it
// spins, it wakes the parked Parkers whose rings filled (harvest.go); a
// NewReplySpinner does not.
func (s *Spinner) Spin(ready func() bool) bool {
	if s.s.sweep {
		harvestSweep()
	}
	return s.s.spin(ready)
}

// Woke reports how long the park that followed a failed Spin lasted, so
// that the budget recovers when spinning a little longer would have won.
func (s *Spinner) Woke(parked time.Duration) { s.s.woke(parked) }

// Budget returns the current budget: what the next Spin may take.
func (s *Spinner) Budget() time.Duration { return s.s.cur }

// CPUMask returns the CPUs this process may run on, as a little-endian bit
// mask (bit i: CPU i), for telling a peer.
func CPUMask() []byte {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var mask []byte
	for cpu := 0; cpu < len(set)*64; cpu++ {
		if set.IsSet(cpu) {
			for len(mask) <= cpu/8 {
				mask = append(mask, 0)
			}
			mask[cpu/8] |= 1 << (cpu % 8)
		}
	}
	return mask
}

// SpinWith returns the spin limit for a wait whose peer runs on the CPUs of
// peerMask (from CPUMask): DefaultSpin, or, when this process has a single
// CPU, the default 20µs if the peer's CPUs are all different from ours (each
// side has a core of its own), else 0.
func SpinWith(peerMask []byte) time.Duration {
	if d := DefaultSpin(); d > 0 {
		return d
	}
	mine := CPUMask()
	if len(mine) == 0 || len(peerMask) == 0 {
		return 0
	}
	for i := range min(len(mine), len(peerMask)) {
		if mine[i]&peerMask[i] != 0 {
			return 0
		}
	}
	return defaultSpin
}
