package shm

import (
	"context"
	"runtime"
	"sync"
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
// between the two.

var (
	governed  atomic.Int32  // the governor's Ps at most, while one runs (0: none)
	oneP      atomic.Bool   // the governor holds the process at one P: nothing spins
	spinsPaid atomic.Uint64 // spins that won and short parks, in batches of ringBatch
	parks     atomic.Uint64 // parks after a spin, or instead of one, in batches of ringBatch

	// The moves and the time at one P: what ended, and since when the
	// process is there now (zero: it is not). One lock, taken with each
	// move (with oneP's change), so that a reader sees them agree and a
	// total that never goes back.
	govTime          sync.Mutex
	govDowns, govUps uint64
	govAtOne         time.Duration
	govDownAt        time.Time
)

// shortPark: a park shorter than this counts as one a spin would have
// saved. Longer than a spin, for at one P nothing spins and a park lasts
// at least the wake-up of the thread that ends it (10-30 µs on a guest
// whose idle CPUs halt).
const shortPark = 2 * defaultSpin

// ringBatch: a spinner adds to spinsPaid and parks this many at a time,
// so that waiters on many CPUs do not share a cache line for every spin.
const ringBatch = 16

// didPay counts a spin that won, or a park that a spin would have saved.
func (s *spinner) didPay() { countBatched(&s.paid, &spinsPaid) }

// didPark counts a park.
func (s *spinner) didPark() { countBatched(&s.parked, &parks) }

// countBatched counts one in mine, and adds ringBatch to total each time
// mine reaches it.
func countBatched(mine *uint32, total *atomic.Uint64) {
	if *mine++; *mine == ringBatch {
		*mine = 0
		total.Add(ringBatch)
	}
}

// The governor's policy. It reads the process's CPU time and the spinners'
// counts every govWindow (govIdle at one P after a window with nothing to
// do). At every P it judges blocks of govCalm windows (half a
// second): one P if the block averaged less than govDownCPU cores, fewer
// than half govPaidRate paid spins and half govParkRate parks a second.
// At one P it moves back up after two windows in a row with more than
// govUpCPU cores (one P nearly busy), or with that many paid spins or
// parks (clients whose rings are busy: a spin would pay at two; at one P
// the wake-up of a parked pump often takes longer than shortPark, so the
// rate of parks says it too). At two Ps a node that crosses a link once
// per request uses about half a core, a third at one (BENCHMARKS.md,
// "fifth sitting"), hence the gap between govDownCPU and govUpCPU, as
// between half the rates and the rates.
const (
	govWindow   = 10 * time.Millisecond
	govIdle     = 50 * time.Millisecond // the window at one P after an idle one
	govCalm     = 50
	govPaidRate = 2000  // paid spins a second: busy at one P; a block at every P needs half
	govParkRate = 15000 // parks a second: the same
	govDownCPU  = 0.7
	govUpCPU    = 0.85
)

// procsPolicy decides, window by window, whether the process runs at one P.
type procsPolicy struct {
	calmNeeded int  // windows in a block judged at every P
	one        bool // at one P now
	busyRun    int  // windows in a row, at one P, that were busy

	// The block being judged at every P: windows, seconds, CPU seconds,
	// paid spins, parks.
	n                       int
	secs, cpu, paid, parked float64
}

// step takes one window: its length, the CPU seconds, paid spins and
// parks in it; it reports whether the process should run at one P.
func (g *procsPolicy) step(secs, cpu, paid, parked float64) bool {
	if g.one {
		if cpu/secs > govUpCPU || paid/secs >= govPaidRate || parked/secs >= govParkRate {
			g.busyRun++
		} else {
			g.busyRun = 0
		}
		if g.busyRun >= 2 {
			g.one, g.busyRun = false, 0
		}
		return g.one
	}
	g.n++
	g.secs, g.cpu, g.paid, g.parked = g.secs+secs, g.cpu+cpu, g.paid+paid, g.parked+parked
	if g.n < g.calmNeeded {
		return false
	}
	g.one = g.cpu/g.secs < govDownCPU && g.paid/g.secs < govPaidRate/2 && g.parked/g.secs < govParkRate/2
	g.n, g.secs, g.cpu, g.paid, g.parked = 0, 0, 0, 0, 0
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

// GovernProcs adapts GOMAXPROCS to the process's load until ctx ends: one
// P while its rings are quiet and it needs less than most of a core, the
// Ps it started with as soon as it needs more or its clients' rings are
// busy. While at one P, every spin of this package is off (SpinsOff). It
// reports false, and does nothing, when the process has fewer than two
// Ps or CPUs or another governor runs. The returned function waits until
// the governor stopped, GOMAXPROCS back at the value it started with.
// Each move stops the world (tens of microseconds) and, as any call of
// runtime.GOMAXPROCS does, ends the runtime's own updates of GOMAXPROCS
// (to a container's CPU limit) for the life of the process; one the
// runtime made after GovernProcs read GOMAXPROCS, before its first move,
// is undone by that move. Programs that set GOMAXPROCS for a reason of
// their own should not call it.
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
		moved := false
		defer close(done)
		defer func() {
			if moved {
				runtime.GOMAXPROCS(most)
				moveUp()
			}
			governed.Store(0)
		}()
		g := procsPolicy{calmNeeded: calm}
		t := time.NewTimer(window)
		defer t.Stop()
		lastAt, lastCPU, lastPaid, lastParks := time.Now(), cpuTime(), spinsPaid.Load(), parks.Load()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := time.Now()
			cpu, paid, parked := cpuTime(), spinsPaid.Load(), parks.Load()
			secs := now.Sub(lastAt).Seconds()
			used := (cpu - lastCPU).Seconds()
			one := g.step(secs, used, float64(paid-lastPaid), float64(parked-lastParks))
			next := window
			if one && used < secs/100 && paid == lastPaid && parked == lastParks {
				next = govIdle // idle at one P: fewer wake-ups of its own
			}
			lastAt, lastCPU, lastPaid, lastParks = now, cpu, paid, parked
			if one != oneP.Load() {
				moved = true
				if one {
					moveDown() // spins stop before the second P goes
					runtime.GOMAXPROCS(1)
				} else {
					runtime.GOMAXPROCS(most)
					moveUp()
				}
			}
			t.Reset(next)
		}
	}()
	return func() { <-done }, true
}

// moveDown records a move to one P, before it: from here on nothing
// spins.
func moveDown() {
	govTime.Lock()
	defer govTime.Unlock()
	oneP.Store(true)
	govDowns++
	govDownAt = time.Now()
}

// moveUp records a move from one P back to every P, after it; nothing if
// the process is not at one P.
func moveUp() {
	govTime.Lock()
	defer govTime.Unlock()
	if !oneP.Load() {
		return
	}
	oneP.Store(false)
	govUps++
	govAtOne += time.Since(govDownAt)
	govDownAt = time.Time{}
}

// SpinsOff reports whether a governor holds the process at one P, where
// nothing should spin: a loop that polls a ring itself, not through a
// Spinner, checks it too.
func SpinsOff() bool { return oneP.Load() }

// ProcsState is what GovernProcs did: whether it runs, whether it holds
// the process at one P now, and, over every governor the process ran, how
// often one moved to one P and back and how long the process ran at one P.
type ProcsState struct {
	Governing, One bool
	Downs, Ups     uint64
	AtOne          time.Duration
}

// ReadProcsState returns what GovernProcs did so far in this process.
func ReadProcsState() ProcsState {
	govTime.Lock()
	defer govTime.Unlock()
	s := ProcsState{Governing: governed.Load() != 0, One: oneP.Load(), Downs: govDowns, Ups: govUps, AtOne: govAtOne}
	if !govDownAt.IsZero() {
		s.AtOne += time.Since(govDownAt)
	}
	return s
}
