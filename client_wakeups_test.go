package switchboard

import (
	"context"
	"sync"
	"testing"

	"github.com/switchboard-ipc/switchboard/shm"
)

// TestCallWakeupsEightCallers: eight connections calling at once, 64 B
// echoes, count their wake-ups (client and node share this process, so
// the counts are both ends'). A doorbell that a writer decided not to
// ring (its "waiter parked?" flag read wrong) leaves the wait to the 1 ms
// re-check, which counts a rescue: rescues must stay a small fraction of
// the calls. The kernel and the Go scheduler may delay a ring's wake-up
// past the re-check now and then (BENCHMARKS.md, "Wake-ups the kernel
// loses"), hence a fraction and not zero.
func TestCallWakeupsEightCallers(t *testing.T) {
	if testing.Short() {
		t.Skip("counts wake-ups: not in -short")
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
	if limit := uint64(total / 100); d.Rescued > limit {
		t.Errorf("%d of %d calls' waits were rescued by the re-check (limit %d): a doorbell was not rung", d.Rescued, callers*calls, limit)
	}
}
