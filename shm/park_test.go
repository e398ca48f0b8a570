package shm

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// parkTimeout bounds every wait of these tests.
const parkTimeout = 5 * time.Second

// startPark runs Park in a goroutine and returns a function that waits for
// its result, failing the test after parkTimeout. If the test ends before
// Park returned, the doorbell is closed and the goroutine waited for.
func startPark(t *testing.T, bell *Doorbell, ready func() bool, conds ...Cond) func() error {
	t.Helper()
	done := make(chan error, 1)
	returned := false
	go func() { done <- NewParker(bell).Park(ready, conds...) }()
	t.Cleanup(func() {
		if returned {
			return
		}
		bell.Close()
		select {
		case <-done:
		case <-time.After(parkTimeout):
			t.Error("Park did not end when its doorbell closed")
		}
	})
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			returned = true
			return err
		case <-time.After(parkTimeout):
			t.Fatal("Park did not return")
			return nil
		}
	}
}

// looks records what a Park condition saw at each look, and signals each
// look, so that a test can wait until Park has seen a state.
type looks struct {
	last   atomic.Int64
	signal chan struct{}
}

func newLooks() *looks {
	l := &looks{signal: make(chan struct{}, 1)}
	l.last.Store(-1)
	return l
}

func (l *looks) saw(v int) {
	l.last.Store(int64(v))
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// await waits until the condition's last look saw v.
func (l *looks) await(t *testing.T, v int) {
	t.Helper()
	timeout := time.After(parkTimeout)
	for l.last.Load() != int64(v) {
		select {
		case <-l.signal:
		case <-timeout:
			t.Fatalf("Park's condition saw %d, never %d", l.last.Load(), v)
		}
	}
}

// TestParkData: a goroutine parked on an armed consumer wakes when frames
// come, announces itself again after a wake-up that found too little, and
// disarms when it returns.
func TestParkData(t *testing.T) {
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	l := newLooks()
	// Ready once two frames of 32 bytes are there.
	ready := func() bool {
		n := c.Pending()
		l.saw(n)
		return n >= 64
	}
	c.Arm()
	wait := startPark(t, data, ready, c)
	l.await(t, 0)
	if err := p.TryWrite(Header{Kind: 1, ID: 1}, []byte("one")); err != nil {
		t.Fatal(err)
	}
	// The frame's ring consumed the announcement; Park must make it
	// again, or the next frame would not ring.
	l.await(t, 32)
	if c.r.sleeping.Load() != 1 {
		t.Fatal("Park sleeps on, unannounced, after a wake-up that found too little")
	}
	if err := p.TryWrite(Header{Kind: 1, ID: 2}, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if c.r.sleeping.Load() != 0 {
		t.Fatal("consumer still armed after Park returned")
	}
	for id := uint64(1); id <= 2; id++ {
		if f, err := c.Next(); err != nil || f.ID != id {
			t.Fatalf("frame %d: %+v, %v", id, f.Header, err)
		}
	}
	if n := data.Rescued(); n != 0 {
		t.Logf("%d wake-ups needed a re-check", n) // a lost eventfd wake-up, see TestSharedDoorbell
	}
}

// TestParkSpace: a producer parked on Space in a full ring wakes when the
// consumer releases room, as TestParkData.
func TestParkSpace(t *testing.T) {
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	// Eight frames of 128 bytes fill the ring.
	for i := range 8 {
		if err := p.TryWrite(Header{Kind: 1, ID: uint64(i)}, make([]byte, 128-HeaderSize)); err != nil {
			t.Fatal(err)
		}
	}
	l := newLooks()
	// Ready once a frame of 256 bytes fits: two frames released.
	ready := func() bool {
		l.saw(p.Fill())
		return p.Fits(256 - HeaderSize)
	}
	p.ArmSpace()
	wait := startPark(t, space, ready, p.Space())
	l.await(t, 1024)
	release := func() {
		t.Helper()
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		c.Release()
	}
	release()
	l.await(t, 1024-128)
	if p.r.waiting.Load() != 1 {
		t.Fatal("Park sleeps on, unannounced, after a wake-up that found too little")
	}
	release()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if p.r.waiting.Load() != 0 {
		t.Fatal("producer still armed after Park returned")
	}
	if err := p.TryWrite(Header{Kind: 2}, make([]byte, 256-HeaderSize)); err != nil {
		t.Fatalf("after Park: %v", err)
	}
	if n := space.Rescued(); n != 0 {
		t.Logf("%d wake-ups needed a re-check", n)
	}
}

// TestParkConds parks on two conditions sharing one doorbell, data in one
// ring and room in another, as a pump does: either wakes it, and both are
// disarmed after.
func TestParkConds(t *testing.T) {
	bell, other := newBells(t)
	pin, in := newTestRing(t, 1024, WithDoorbells(bell, other), WithSpin(0)) // bell: data in "in"
	out, outc := newTestRing(t, 1024, WithDoorbells(other, bell), WithSpin(0))
	for out.TryWrite(Header{Kind: 1}, make([]byte, 100)) == nil { // bell: room in "out"
	}
	for _, wake := range []string{"data", "space"} {
		t.Run(wake, func(t *testing.T) {
			ready := func() bool { return in.Ready() || out.Fits(100) }
			in.Arm()
			out.ArmSpace()
			if ready() {
				t.Fatal("ready before the wake-up")
			}
			wait := startPark(t, bell, ready, in, out.Space())
			switch wake {
			case "data":
				if err := pin.TryWrite(Header{Kind: 1}); err != nil {
					t.Fatal(err)
				}
			case "space":
				if _, err := outc.Next(); err != nil {
					t.Fatal(err)
				}
				outc.Release()
			}
			if err := wait(); err != nil {
				t.Fatal(err)
			}
			if in.r.sleeping.Load() != 0 || out.r.waiting.Load() != 0 {
				t.Fatalf("armed after Park returned: sleeping %d, waiting %d", in.r.sleeping.Load(), out.r.waiting.Load())
			}
			// Back to not ready for the next case.
			switch wake {
			case "data":
				if _, err := in.Next(); err != nil {
					t.Fatal(err)
				}
				in.Release()
			case "space":
				if err := out.TryWrite(Header{Kind: 1}, make([]byte, 100)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestParkReady: Park returns at once, disarmed, when ready already holds.
func TestParkReady(t *testing.T) {
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	if err := p.TryWrite(Header{Kind: 1}); err != nil {
		t.Fatal(err)
	}
	c.Arm()
	p.ArmSpace()
	wait := startPark(t, data, c.Ready, c, p.Space())
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if c.r.sleeping.Load() != 0 || p.r.waiting.Load() != 0 {
		t.Fatal("armed after Park returned")
	}
}

// TestParkClosed: Park ends with ErrClosed when its doorbell closes, or is
// closed already, and disarms.
func TestParkClosed(t *testing.T) {
	for _, before := range []bool{false, true} {
		data, space := newBells(t)
		p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
		never := func() bool { return false }
		c.Arm()
		p.ArmSpace()
		if before {
			data.Close()
		}
		wait := startPark(t, data, never, c, p.Space())
		if !before {
			data.Close()
		}
		if err := wait(); !errors.Is(err, ErrClosed) {
			t.Fatalf("closed before Park %v: %v, want ErrClosed", before, err)
		}
		if c.r.sleeping.Load() != 0 || p.r.waiting.Load() != 0 {
			t.Fatalf("closed before Park %v: armed after Park returned", before)
		}
	}
}

// TestParkerAllocatesNothing: a pump parks without an allocation when its
// ready function and conds are made once.
func TestParkerAllocatesNothing(t *testing.T) {
	cons, _, bell, _ := newStreamLink(t, 1024)
	p := NewParker(bell)
	ready := func() bool { return true } // the wait ends at the first look
	conds := []Cond{cons[0]}
	if allocs := testing.AllocsPerRun(100, func() {
		cons[0].Arm()
		if err := p.Park(ready, conds...); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per park, want 0", allocs)
	}
}
