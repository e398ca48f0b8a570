package shm

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// ringState describes a ring's shared words (its control block, as
// Segment.Ring returns it first), for failure messages.
func ringState(region, _ []byte) string {
	return fmt.Sprintf("head %d tail %d sleeping %d waiting %d",
		atomicWord(region, offHead).Load(), atomicWord(region, offTail).Load(),
		atomicWord(region, offSleeping).Load(), atomicWord(region, offWaiting).Load())
}

// TestCrossProcessNoLostWakeup runs many round trips with a child that
// echoes, parking at once and spinning first, on one CPU each: a lost
// wake-up shows as a round trip that never completes. It logs how many
// waits the re-check rescued (see Doorbell.WaitUntil).
func TestCrossProcessNoLostWakeup(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 20_000
	}
	for _, spin := range []time.Duration{0, defaultSpin} {
		t.Run(fmt.Sprint("spin=", spin), func(t *testing.T) {
			d, err := NewDuplex("wakeup", 1<<16, WithSpin(spin))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			params := childParams{Spin: spin}
			if twoCPUs() {
				old, err := pinProcess([]int{0})
				if err != nil {
					t.Fatal(err)
				}
				defer restoreAffinity(old)
				params.CPUs = []int{1}
			}
			c := startChild(t, "echo", params, d.Fds()...)
			ctx := context.Background()
			for i := 0; i < n; i++ {
				if err := d.Tx.Write(ctx, Header{Kind: kindData, ID: uint64(i)}); err != nil {
					t.Fatal(err)
				}
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := d.Rx.Wait(wctx)
				cancel()
				if err != nil {
					t.Fatalf("round trip %d: %v\nto child:   %s\nfrom child: %s", i, err, ringState(d.Seg.Ring(0)), ringState(d.Seg.Ring(1)))
				}
				f, err := d.Rx.Next()
				if err != nil || f.ID != uint64(i) {
					t.Fatalf("round trip %d: got %d, %v", i, f.ID, err)
				}
			}
			if err := d.Tx.Write(ctx, Header{Kind: kindStop}); err != nil {
				t.Fatal(err)
			}
			if err := d.Rx.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			ack, err := d.Rx.Next()
			if err != nil || ack.Kind != kindAck {
				t.Fatalf("no ack: %v", err)
			}
			c.wait(t)
			t.Logf("%d round trips; waits rescued by a re-check: %d here, %d in the child", n, d.Rescued(), ack.ID)
		})
	}
}

// TestWaitRescuesLostWakeup publishes a frame without ringing, as if the
// kernel had lost the wake-up: the parked consumer must find it at its
// first re-check and count the rescue.
func TestWaitRescuesLostWakeup(t *testing.T) {
	before := ReadWaitCounts()
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	done := make(chan error, 1)
	go func() { done <- c.Wait(context.Background()) }()
	// Wait until the consumer has announced its sleep and had ample time to
	// check the ring and park (it cannot be observed parking), then publish
	// behind its back.
	for c.r.sleeping.Load() == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(20 * time.Millisecond)
	if err := p.Append(Header{Kind: 1}); err != nil {
		t.Fatal(err)
	}
	p.published = p.head
	p.r.head.Store(p.head) // Flush without the ring
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("parked consumer never re-checked")
	}
	if got := data.Rescued(); got != 1 {
		t.Fatalf("rescued %d waits, want 1", got)
	}
	// No test in this package runs in parallel: the process's counters
	// moved for this wait alone.
	d := ReadWaitCounts().Sub(before)
	if d.Rescued != 1 || d.Rechecks < 1 || d.Rings != 0 || d.Woken != 0 || d.Sleeps != d.Rechecks {
		t.Errorf("wait counts %+v: want one rescue after re-checks, no ring, no wake-up by the netpoller, one sleep per re-check", d)
	}
}

// TestWaitCountsRing: a consumer parked on its doorbell and woken by the
// producer's ring counts one ring, one sleep and one wake-up, and no
// re-check.
func TestWaitCountsRing(t *testing.T) {
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	for range 20 {
		before := ReadWaitCounts()
		done := make(chan error, 1)
		go func() { done <- c.Wait(context.Background()) }()
		for c.r.sleeping.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		// Most likely past its look at the ring, and well before the re-check
		// (a time.Sleep this short can last a millisecond: busy-wait).
		for t0 := time.Now(); time.Since(t0) < 200*time.Microsecond; {
		}
		if err := p.TryWrite(Header{Kind: 1}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		c.Release()
		d := ReadWaitCounts().Sub(before)
		if d.Rechecks > 0 || d.Sleeps == 0 {
			continue // the re-check (1 ms) beat the ring, or the ring came before the sleep: try again
		}
		if d.Rings != 1 || d.Waits != 1 || d.Sleeps != 1 || d.Woken < 1 || d.Rescued != 0 {
			t.Fatalf("wait counts %+v: want one ring, one wait, one sleep, woken by the ring", d)
		}
		return
	}
	t.Skip("no try parked before the ring and woke by it: machine too busy")
}

func twoCPUs() bool { return availableCPUs() >= 2 }
