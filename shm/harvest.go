package shm

import (
	"sync"
	"sync/atomic"
)

// Harvesting: a Parker about to sleep wakes the Parkers of this process
// that went to sleep shortly before it and whose rings have filled since.
//
// A parked goroutine sleeps in Go's netpoller, and the runtime looks for
// descriptors that became ready only when a P runs out of goroutines to
// run (or from sysmon, every 10 ms). A process whose Ps stay busy (a node
// serving eight connections, whose pumps spin and hand off to each other)
// therefore leaves a rung doorbell unnoticed until the waiter's own
// re-check timer fires, which the scheduler does check at every switch:
// counted, with eight callers, in more than 1 % of the calls, each late by
// the full re-check interval (BENCHMARKS.md, "Wake-ups under load"). A
// goroutine about to park is running, so the process is not idle: it
// looks at the rings of the others, as shmipc-go's event loop harvests
// many connections' queues per wake-up, and wakes those with unread
// frames through their read deadline, which readies the goroutine at once
// on this P without the netpoller.
//
// Only sleeps within their first three re-check intervals (7 ms) are
// listed: a connection that stayed idle longer is woken by its ring (or
// its re-check) and costs no sweep. A sweep looks at harvestMax sleepers at
// most, starting where the last one stopped.

// harvestMax bounds the sleepers one sweep looks at.
const harvestMax = 16

// A prober is a Cond whose change another goroutine can detect from
// shared counters alone: a Consumer has unread frames. The counters are
// the peer's to write too: a lie (or a frame another goroutine holds
// unreleased) costs only a wake-up that finds nothing, and a sleeper
// woken so stays listed for at most three (waitUntil's intervals double).
type prober interface{ probe() bool }

func (c *Consumer) probe() bool { return c.Unreleased() }

var harvest struct {
	mu     sync.Mutex
	parked []*Parker    // sleeping in their first re-check intervals; each knows its index
	next   int          // where the next sweep starts, when more than harvestMax sleep
	listed atomic.Int32 // len(parked), for a sweep's look without the lock
}

// harvestAdd lists p, about to sleep.
func harvestAdd(p *Parker) {
	harvest.mu.Lock()
	p.slot = len(harvest.parked)
	harvest.parked = append(harvest.parked, p)
	harvest.listed.Store(int32(len(harvest.parked)))
	p.bell.kickable.Store(true)
	harvest.mu.Unlock()
}

// harvestRemove takes p off the list, if it is on it.
func harvestRemove(p *Parker) {
	harvest.mu.Lock()
	harvestRemoveLocked(p)
	harvest.mu.Unlock()
}

func harvestRemoveLocked(p *Parker) {
	i := p.slot
	if i < 0 {
		return
	}
	last := len(harvest.parked) - 1
	harvest.parked[i] = harvest.parked[last]
	harvest.parked[i].slot = i
	harvest.parked[last] = nil
	harvest.parked = harvest.parked[:last]
	harvest.listed.Store(int32(last))
	p.slot = -1
}

// harvestForget takes the sleeper on d off the list: d is closing, and its
// rings may be unmapped as soon as Close returns.
func harvestForget(d *Doorbell) {
	harvest.mu.Lock()
	for _, p := range harvest.parked {
		if p.bell == d {
			harvestRemoveLocked(p)
			break
		}
	}
	harvest.mu.Unlock()
}

// harvestSweep wakes the listed sleepers whose rings have unread frames,
// and takes them off the list.
func harvestSweep() {
	if harvest.listed.Load() == 0 {
		return // nobody to wake; one listed meanwhile waits for the next sweep
	}
	harvest.mu.Lock()
	defer harvest.mu.Unlock()
	n := len(harvest.parked)
	if n == 0 {
		return
	}
	i := 0
	if n > harvestMax {
		i = harvest.next % n
		harvest.next = i + harvestMax
		n = harvestMax
	}
	for looked := 0; looked < n && len(harvest.parked) > 0; looked++ {
		if i >= len(harvest.parked) {
			i = 0
		}
		p := harvest.parked[i]
		if !p.probe() {
			i++
			continue
		}
		harvestRemoveLocked(p) // slot i now holds the last sleeper
		p.bell.kick()
	}
}

// probe reports whether one of p's conditions has changed, from shared
// counters alone. The caller holds harvest.mu; p's conds stay put while p
// is listed.
func (p *Parker) probe() bool {
	for _, c := range p.conds {
		if pr, ok := c.(prober); ok && pr.probe() {
			return true
		}
	}
	return false
}

// kick ends the waiter's sleep through its read deadline: the runtime
// readies a goroutine whose deadline passes without the netpoller. A kick
// that comes before the sleep is overwritten by the sleep's own deadline,
// but the sleep's first look at its condition finds what the sweep found.
// A kick that comes after the sleep ended leaves a past deadline, which the
// next wait replaces (wait sets a deadline, or clears it, when kickable).
func (d *Doorbell) kick() {
	d.kicked.Store(true)
	d.f.SetReadDeadline(longAgo)
}

// harvestInterval is the last re-check interval during which a sleeper
// stays listed: its first three (7 ms in all), past which its connection
// counts as idle.
const harvestInterval = 4 * firstRecheck
