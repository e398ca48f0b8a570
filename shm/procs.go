package shm

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A process that serves rings (a node) wants two kinds of Ps. While its
// peers answer within a spin, a P each for the spinning waiter and for the
// rest of its work is what makes a round trip take a microsecond. While
// they do not, and the process needs less than a core, every P beyond the
// first costs more than it gives: each goroutine the process readies while
// a P is idle wakes a thread on another CPU (on a guest whose idle CPUs
// halt, 10-30 µs), and the process's own hand-offs (a link's writer and
// reader, the netpoller's) are such readies. GovernProcs moves the process
// between the two: one P while its spins would not pay and it needs less
// than govDownCPU of a core, all of them (GOMAXPROCS as it started) as soon
// as a spin would pay or one P is nearly busy.

var (
	governed  atomic.Int32  // the governor's Ps at most, while one runs (0: none)
	oneP      atomic.Bool   // the governor holds the process at one P: nothing spins
	spinsPaid atomic.Uint64 // spins that won and parks shorter than a spin, in batches of paidBatch

	govDowns, govUps atomic.Uint64 // the governor's moves to one P and back
	govAtOne         atomic.Int64  // nanoseconds spent at one P, up to the last move
)

// shortPark: a park shorter than this counts as one a spin would have
// saved. Longer than a spin, for at one P nothing spins and a park lasts
// at least the wake-up of the thread that ends it (10-30 µs on a guest
// whose idle CPUs halt).
const shortPark = 2 * defaultSpin

// paidBatch: a spinner adds to spinsPaid this many at a time, so that
// waiters on many CPUs do not share a cache line for every spin.
const paidBatch = 16

// didPay counts a spin that won, or a park that a spin would have saved.
func (s *spinner) didPay() {
	if s.paid++; s.paid == paidBatch {
		s.paid = 0
		spinsPaid.Add(paidBatch)
	}
}

// The governor's policy, window by window: down to one P after calm
// windows in a row with fewer than govPaidRate paid spins a second and
// less than govDownCPU cores of CPU; back up at once when a window has
// that many paid spins or more than govUpCPU cores of CPU (one P nearly
// busy: the process may need more). At two Ps a node that crosses a link
// once per request uses about half a core where it needs a third at one
// (BENCHMARKS.md, "seventh sitting"), hence the gap between the two.
const (
	govWindow   = 10 * time.Millisecond
	govCalm     = 50 // windows: half a second
	govPaidRate = 2000
	govDownCPU  = 0.7
	govUpCPU    = 0.85
)

// procsPolicy decides, window by window, whether the process runs at one P.
type procsPolicy struct {
	calmNeeded int  // windows in a row that would do with one P before it does
	one        bool // at one P now
	calm       int  // windows in a row that would do with one P
}

// step takes one window's CPU use (in cores) and paid spins per second and
// reports whether the process should run at one P.
func (g *procsPolicy) step(cores, paidPerSec float64) bool {
	busy := paidPerSec >= govPaidRate
	if g.one {
		if busy || cores > govUpCPU {
			g.one, g.calm = false, 0
		}
		return g.one
	}
	if busy || cores >= govDownCPU {
		g.calm = 0
		return false
	}
	if g.calm++; g.calm >= g.calmNeeded {
		g.one, g.calm = true, 0
	}
	return g.one
}

// cpuTime returns the CPU time the process used so far (user and system,
// every thread).
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// GovernProcs adapts GOMAXPROCS to the process's load until ctx ends, then
// puts it back as it found it. It reports false, and does nothing, when
// the process has fewer than two Ps or CPUs or another governor runs. The
// returned function waits until the governor stopped. Programs that set
// GOMAXPROCS for a reason of their own should not call it: it changes the
// process's Ps (a stop of the world, at most once a window) and turns
// every spin of this package off while at one P.
func GovernProcs(ctx context.Context) (wait func(), governing bool) {
	return governProcs(ctx, govWindow, govCalm)
}

func governProcs(ctx context.Context, window time.Duration, calm int) (wait func(), governing bool) {
	most := runtime.GOMAXPROCS(0)
	if most < 2 || availableCPUs() < 2 || !governed.CompareAndSwap(0, int32(most)) {
		return func() {}, false
	}
	done := make(chan struct{})
	go func() {
		var downAt time.Time
		defer close(done)
		defer func() {
			if oneP.Load() {
				govAtOne.Add(int64(time.Since(downAt)))
			}
			oneP.Store(false)
			runtime.GOMAXPROCS(most)
			governed.Store(0)
		}()
		g := procsPolicy{calmNeeded: calm}
		t := time.NewTicker(window)
		defer t.Stop()
		lastAt, lastCPU, lastPaid := time.Now(), cpuTime(), spinsPaid.Load()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				now, cpu, paid := time.Now(), cpuTime(), spinsPaid.Load()
				secs := now.Sub(lastAt).Seconds()
				if secs <= 0 {
					continue
				}
				one := g.step((cpu-lastCPU).Seconds()/secs, float64(paid-lastPaid)/secs)
				lastAt, lastCPU, lastPaid = now, cpu, paid
				if one != oneP.Load() {
					if one {
						oneP.Store(true) // spins stop before the second P goes
						runtime.GOMAXPROCS(1)
						govDowns.Add(1)
						downAt = now
					} else {
						runtime.GOMAXPROCS(most)
						oneP.Store(false)
						govUps.Add(1)
						govAtOne.Add(int64(now.Sub(downAt)))
					}
				}
			}
		}
	}()
	return func() { <-done }, true
}

// ProcsState is what GovernProcs did: whether it runs, whether it holds
// the process at one P now, how often it moved down to one P and back up,
// and how long the process ran at one P (up to the last move).
type ProcsState struct {
	Governing, One bool
	Downs, Ups     uint64
	AtOne          time.Duration
}

// ReadProcsState returns what GovernProcs did so far in this process.
func ReadProcsState() ProcsState {
	return ProcsState{Governing: governed.Load() != 0, One: oneP.Load(), Downs: govDowns.Load(), Ups: govUps.Load(), AtOne: time.Duration(govAtOne.Load())}
}
