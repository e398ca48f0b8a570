package shm

import "sync/atomic"

// WaitCounts are this process's doorbell counters since it started: the
// wake-ups of its waits, by count rather than by time. A load's cost in
// wake-ups is the difference of two readings divided by the work done in
// between (tests/bench's rpc rows, the wake-up tests).
type WaitCounts struct {
	Rings    uint64 // Ring calls: eventfd writes
	Waits    uint64 // WaitUntil calls
	Sleeps   uint64 // times a WaitUntil went to sleep in the netpoller (its condition was false): each re-check starts another
	Woken    uint64 // looks at a condition after the netpoller reported a ring
	Rechecks uint64 // sleeps ended by the re-check timer rather than a ring
	Rescued  uint64 // re-checks that found the condition true (Doorbell.Rescued, summed)
	// Harvested counts sleeps that another Parker ended because their
	// rings had filled while the netpoller was not looking (harvest.go).
	Harvested uint64
}

// waitCounts are the counters behind ReadWaitCounts. Each is one atomic
// add on a path that already makes a system call or parks a goroutine.
var waitCounts struct {
	rings, waits, sleeps, woken, rechecks, rescued, harvested atomic.Uint64
}

// ReadWaitCounts returns the process's doorbell counters.
func ReadWaitCounts() WaitCounts {
	return WaitCounts{
		Rings:     waitCounts.rings.Load(),
		Waits:     waitCounts.waits.Load(),
		Sleeps:    waitCounts.sleeps.Load(),
		Woken:     waitCounts.woken.Load(),
		Rechecks:  waitCounts.rechecks.Load(),
		Rescued:   waitCounts.rescued.Load(),
		Harvested: waitCounts.harvested.Load(),
	}
}

// Sub returns the counts from earlier to w.
func (w WaitCounts) Sub(earlier WaitCounts) WaitCounts {
	return WaitCounts{
		Rings:     w.Rings - earlier.Rings,
		Waits:     w.Waits - earlier.Waits,
		Sleeps:    w.Sleeps - earlier.Sleeps,
		Woken:     w.Woken - earlier.Woken,
		Rechecks:  w.Rechecks - earlier.Rechecks,
		Rescued:   w.Rescued - earlier.Rescued,
		Harvested: w.Harvested - earlier.Harvested,
	}
}
