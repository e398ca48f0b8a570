package shm

import (
	"runtime"
	"testing"
	"time"
)

// parkListed starts a goroutine that parks on c's ring with a Parker, and
// returns once the Parker is listed for harvesting and has most likely
// gone to sleep.
func parkListed(t *testing.T, c *Consumer, bell *Doorbell) (*Parker, chan error) {
	t.Helper()
	parker := NewParker(bell)
	done := make(chan error, 1)
	go func() {
		c.Arm()
		done <- parker.Park(c.Ready, c)
	}()
	for {
		harvest.mu.Lock()
		listed := parker.slot >= 0
		harvest.mu.Unlock()
		if listed {
			break
		}
		runtime.Gosched()
	}
	for t0 := time.Now(); time.Since(t0) < 300*time.Microsecond; {
	}
	return parker, done
}

// TestParkHarvested: a frame published without a ring (as when the
// netpoller is not looking, or the wake-up is lost) reaches a Parker as
// soon as another goroutine of the process is about to wait (a Spin or a
// Park): the sweep wakes it, with no re-check and no rescue.
func TestParkHarvested(t *testing.T) {
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	for try := range 20 {
		before := ReadWaitCounts()
		_, done := parkListed(t, c, data)
		if err := p.Append(Header{Kind: 1, ID: uint64(try)}); err != nil {
			t.Fatal(err)
		}
		p.published = p.head
		p.r.head.Store(p.head) // Flush without the ring
		NewSpinner(0).Spin(func() bool { return true })
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("parked consumer never woke")
		}
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		c.Release()
		d := ReadWaitCounts().Sub(before)
		if d.Rechecks > 0 || d.Sleeps == 0 {
			continue // the re-check fired before the frame came, or the frame came before the sleep: try again
		}
		if d.Harvested != 1 {
			t.Fatalf("wait counts %+v: a sleeping Parker was not woken by the sweep", d)
		}
		if d.Rings != 0 || d.Rescued != 0 {
			t.Fatalf("wait counts %+v: want no ring and no rescue", d)
		}
		return
	}
	t.Fatal("no try was woken by the sweep")
}

// TestHarvestForgetsClosedBell: closing a doorbell takes its listed
// Parker off the harvest list before Close returns: the rings it guards
// may be unmapped next, and a sweep must not look at them. (A Parker
// listed here by hand: a real one, woken by the Close, also takes itself
// off, but perhaps only after the unmapping.)
func TestHarvestForgetsClosedBell(t *testing.T) {
	data, space := newBells(t)
	_, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	parker := NewParker(data)
	parker.conds = []Cond{c}
	harvestAdd(parker)
	data.Close()
	harvest.mu.Lock()
	listed := parker.slot >= 0
	harvest.mu.Unlock()
	if listed {
		harvestRemove(parker)
		t.Fatal("a Parker of a closed doorbell is still listed")
	}
}
