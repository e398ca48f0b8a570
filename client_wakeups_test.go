package switchboard

import (
	"context"
	"sync"
	"testing"

	"github.com/switchboard-ipc/switchboard/shm"
)

// TestCallWakeupsEightCallers: eight connections calling at once, 64 B
// echoes, count their wake-ups (client and node share this process, so
// the counts are both ends'). With this many goroutines on two Ps, Go
// polls the netpoller rarely, and a rung doorbell's waiter would wait for
// its 1 ms re-check (a rescue), in 1-3 % of the calls: the calls' p99. The
// next goroutine about to wait wakes it instead (shm/harvest.go): rescues
// must be helped by sweeps (the share is logged, not asserted). Not zero:
// a sleeper may find no goroutine about to wait for a whole millisecond
// (BENCHMARKS.md, "Wake-ups under load").
func TestCallWakeupsEightCallers(t *testing.T) {
	if testing.Short() {
		t.Skip("counts wake-ups: not in -short")
	}
	if raceEnabled {
		t.Skip("counts wake-ups: the race detector's slowdown is not the load measured")
	}
	n := startNode(t)
	n.HandleFunc(svcEcho, func(ctx context.Context, r *Request) ([]byte, error) { return r.Payload, nil })
	const callers, calls = 8, 2000
	conns := make([]*Conn, callers)
	for i := range conns {
		conns[i] = dial(t, n)
	}
	p := make([]byte, 64)
	ctx := context.Background()
	before := shm.ReadWaitCounts()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for _, c := range conns {
		wg.Go(func() {
			for range calls {
				if _, err := c.Call(ctx, svcEcho, cmdEcho, p); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d := shm.ReadWaitCounts().Sub(before)
	total := float64(callers * calls)

	t.Logf("%d calls; per call: %.3f rings, %.3f waits, %.3f sleeps, %.3f netpoller wake-ups, %.4f re-checks, %.4f rescued (%d), %.3f harvested",
		callers*calls, float64(d.Rings)/total, float64(d.Waits)/total, float64(d.Sleeps)/total, float64(d.Woken)/total,
		float64(d.Rechecks)/total, float64(d.Rescued)/total, d.Rescued, float64(d.Harvested)/total)
	// How many sleeps each ends depends on the scheduler and the machine's
	// load, so only the mechanism is asserted: when the re-check had to
	// rescue sleepers, sweeps woke others (without them, 2-3 % of the calls
	// are rescued and none harvested); the ratios are logged.
	if d.Rescued > 8 && d.Harvested == 0 {
		t.Errorf("%d sleeps ended by the re-check and none by a sweep: the sweeps do not run", d.Rescued)
	}
}
