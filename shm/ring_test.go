package shm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func newTestRing(t testing.TB, capacity int, opts ...Option) (*Producer, *Consumer) {
	t.Helper()
	region := AlignedBuffer(RingRegionSize(capacity))
	p, err := NewProducer(region, opts...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(region, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

func TestLayout(t *testing.T) {
	// The control words sit on separate 128-byte lines, 8-aligned, before the data.
	offs := []int{offHead, offTail, offSleeping, offWaiting}
	for i, off := range offs {
		if off%cacheLine != 0 {
			t.Errorf("control word %d at %d is not line-aligned", i, off)
		}
		if i > 0 && off-offs[i-1] < cacheLine {
			t.Errorf("control words %d and %d share a line", i-1, i)
		}
		if off+8 > ringCtlSize {
			t.Errorf("control word %d overlaps the data area", i)
		}
	}
	if ringCtlSize%cacheLine != 0 {
		t.Errorf("data area at %d is not line-aligned", ringCtlSize)
	}
	// The frame header fields tile the 24 bytes exactly.
	fields := []struct{ off, size int }{{offLength, 4}, {offKind, 2}, {offFlags, 2}, {offService, 2}, {offCommand, 2}, {offAux, 4}, {offID, 8}}
	next := 0
	for _, f := range fields {
		if f.off != next {
			t.Errorf("header field at %d, want %d", f.off, next)
		}
		next += f.size
	}
	if next != HeaderSize || HeaderSize%frameAlign != 0 {
		t.Errorf("header size %d", next)
	}
	if offID%8 != 0 {
		t.Errorf("id not 8-aligned")
	}
	// Segment header: descriptors fit in the header page, ring regions page-aligned.
	if segOffDesc+MaxRings*segDescSize > segOffCtl || segOffCtl+MaxRings*ringCtlSize > segHeaderPage || segOffCtl%cacheLine != 0 {
		t.Errorf("descriptors and control blocks overflow the header page")
	}
	b := AlignedBuffer(64)
	if uintptr(unsafe.Pointer(&b[0]))%8 != 0 {
		t.Errorf("AlignedBuffer not aligned")
	}
}

func TestRingRoundTrip(t *testing.T) {
	p, c := newTestRing(t, 4096)
	if _, err := c.Next(); err != ErrRingEmpty {
		t.Fatalf("empty ring: got %v", err)
	}
	h := Header{Kind: 7, Flags: 0xa5a5, Service: 65535, Command: 1, Aux: 0xdeadbeef, ID: 1<<63 + 5}
	if err := p.TryWrite(h, []byte("hello, "), []byte("world")); err != nil {
		t.Fatal(err)
	}
	f, err := c.Next()
	if err != nil {
		t.Fatal(err)
	}
	if f.Header != h || string(f.Body) != "hello, world" {
		t.Fatalf("got %+v %q", f.Header, f.Body)
	}
	if _, err := c.Next(); err != ErrRingEmpty {
		t.Fatalf("after one frame: %v", err)
	}
	c.Release()
	// Empty body.
	if err := p.TryWrite(Header{Kind: 1}); err != nil {
		t.Fatal(err)
	}
	f, err = c.Read(nil)
	if err != nil || len(f.Body) != 0 || f.Kind != 1 {
		t.Fatalf("empty body: %+v %v", f, err)
	}
}

func TestRingWrapAndPad(t *testing.T) {
	const capacity = 1024
	p, c := newTestRing(t, capacity)
	// Fill so that the next frame does not fit before the end and needs a pad.
	body := bytes.Repeat([]byte{1}, 300) // frame size 328
	for i := 0; i < 3; i++ {
		if err := p.TryWrite(Header{Kind: 1, ID: uint64(i)}, body); err != nil {
			t.Fatal(i, err)
		}
	}
	// 984 bytes used, 40 left at the end. Free two frames.
	for i := 0; i < 2; i++ {
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	c.Release()
	big := bytes.Repeat([]byte{2}, 200) // 224 bytes: must pad 40 and wrap
	if err := p.TryWrite(Header{Kind: 2, ID: 9}, big); err != nil {
		t.Fatal(err)
	}
	f, err := c.Next()
	if err != nil || f.ID != 2 {
		t.Fatalf("third frame: %+v %v", f.Header, err)
	}
	f, err = c.Next()
	if err != nil || f.ID != 9 || !bytes.Equal(f.Body, big) {
		t.Fatalf("wrapped frame: %+v %v", f.Header, err)
	}
	// The wrapped frame starts at the beginning of the data area.
	if &f.Body[0] != &c.r.data[HeaderSize] {
		t.Fatalf("wrapped frame not at the start of the ring")
	}
	c.Release()
	if p.head != 1024+224 || c.tail != p.head {
		t.Fatalf("head %d tail %d", p.head, c.tail)
	}
}

func TestRingFullAndEmptyEdges(t *testing.T) {
	const capacity = 1024
	p, c := newTestRing(t, capacity)
	// Exactly fill the ring with 8 frames of 128 bytes (104-byte bodies).
	body := make([]byte, 128-HeaderSize)
	for i := 0; i < 8; i++ {
		if err := p.TryWrite(Header{Kind: 1, ID: uint64(i)}, body); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := p.TryWrite(Header{Kind: 1}); err != ErrRingFull {
		t.Fatalf("full ring accepted a frame: %v", err)
	}
	if got := c.Pending(); got != capacity {
		t.Fatalf("pending %d", got)
	}
	// Reading without Release frees nothing.
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	if err := p.TryWrite(Header{Kind: 1}); err != ErrRingFull {
		t.Fatalf("unreleased frame was overwritten: %v", err)
	}
	c.Release()
	if err := p.TryWrite(Header{Kind: 1, ID: 100}, body); err != nil {
		t.Fatalf("after release: %v", err)
	}
	for i := 1; i <= 8; i++ {
		f, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(i)
		if i == 8 {
			want = 100
		}
		if f.ID != want {
			t.Fatalf("frame %d has id %d", i, f.ID)
		}
	}
	if _, err := c.Next(); err != ErrRingEmpty {
		t.Fatalf("drained ring: %v", err)
	}
}

func TestRingMaxFrame(t *testing.T) {
	const capacity = 4096
	p, c := newTestRing(t, capacity)
	max := p.MaxBody()
	if max != capacity/2-HeaderSize {
		t.Fatalf("MaxBody %d", max)
	}
	_, err := p.Reserve(max + 1)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("one byte too large: %v", err)
	}
	if err := p.TryWrite(Header{Kind: 1}, make([]byte, max+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("TryWrite one byte too large: %v", err)
	}
	if err := p.Write(context.Background(), Header{Kind: 1}, make([]byte, max+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write one byte too large: %v", err)
	}
	// Nothing was written by the refused frames; max-size frames go through
	// at every offset of the ring.
	for i := 0; i < 20; i++ {
		n := max
		if i%3 == 1 {
			n = i * 37
		}
		b := bytes.Repeat([]byte{byte(i)}, n)
		if err := p.TryWrite(Header{Kind: 1, ID: uint64(i)}, b); err != nil {
			t.Fatalf("frame %d (%d bytes): %v", i, n, err)
		}
		f, err := c.Read(nil)
		if err != nil || f.ID != uint64(i) || !bytes.Equal(f.Body, b) {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
}

func TestRingReserveCommit(t *testing.T) {
	p, c := newTestRing(t, 4096)
	if err := p.Commit(Header{Kind: 1}, 0); err != ErrNotReserved {
		t.Fatalf("commit without reserve: %v", err)
	}
	buf, err := p.Reserve(100)
	if err != nil || len(buf) != 100 {
		t.Fatal(err)
	}
	n := copy(buf, "zero-copy write")
	if err := p.Commit(Header{Kind: KindPad}, n); err == nil {
		t.Fatal("committed a pad kind")
	}
	if err := p.Commit(Header{Kind: 3, ID: 1}, 101); err != ErrNotReserved {
		t.Fatalf("commit past the reservation: %v", err)
	}
	if err := p.Commit(Header{Kind: 3, ID: 1}, n); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(); err != ErrRingEmpty {
		t.Fatal("frame visible before Flush")
	}
	if !p.Buffered() {
		t.Fatal("not buffered")
	}
	p.Flush()
	f, err := c.Next()
	if err != nil || string(f.Body) != "zero-copy write" || f.ID != 1 {
		t.Fatalf("%q %v", f.Body, err)
	}
	// An abandoned reservation leaves no trace.
	if _, err := p.Reserve(50); err != nil {
		t.Fatal(err)
	}
	if err := p.TryWrite(Header{Kind: 4, ID: 2}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	f, err = c.Next()
	if err != nil || f.ID != 2 || string(f.Body) != "x" {
		t.Fatalf("after abandoned reservation: %+v %v", f, err)
	}
}

func TestRingZeroCopyViews(t *testing.T) {
	p, c := newTestRing(t, 1024)
	for i := 0; i < 3; i++ {
		if err := p.TryWrite(Header{Kind: 1, ID: uint64(i)}, []byte(fmt.Sprint("frame", i))); err != nil {
			t.Fatal(err)
		}
	}
	// A batch of views stays valid until Release, and aliases the ring.
	var views []Frame
	for i := 0; i < 3; i++ {
		f, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, f)
	}
	for i, f := range views {
		if string(f.Body) != fmt.Sprint("frame", i) {
			t.Fatalf("view %d: %q", i, f.Body)
		}
		if cap(f.Body) != len(f.Body) {
			t.Fatalf("view %d can be appended into the ring", i)
		}
	}
	start := uintptr(unsafe.Pointer(&c.r.data[0]))
	if p := uintptr(unsafe.Pointer(&views[0].Body[0])); p < start || p >= start+uintptr(len(c.r.data)) {
		t.Fatal("view is a copy")
	}
	// The copying read does not alias the ring.
	if err := p.TryWrite(Header{Kind: 1}, []byte("copied")); err != nil {
		t.Fatal(err)
	}
	c.Release()
	f, err := c.Read(make([]byte, 0, 64))
	if err != nil {
		t.Fatal(err)
	}
	if p := uintptr(unsafe.Pointer(&f.Body[0])); p >= start && p < start+uintptr(len(c.r.data)) {
		t.Fatal("Read returned a view")
	}
}

func TestRingNewRejectsBadRegions(t *testing.T) {
	for _, n := range []int{0, 100, ringCtlSize, ringCtlSize + 1000, ringCtlSize + 512} {
		if _, err := NewProducer(AlignedBuffer(n)); err == nil {
			t.Errorf("region of %d bytes accepted", n)
		}
	}
	misaligned := AlignedBuffer(RingRegionSize(1024) + 8)[4 : 4+RingRegionSize(1024)]
	if _, err := NewConsumer(misaligned); err == nil {
		t.Error("misaligned region accepted")
	}
}

// TestRingConcurrent streams frames of random sizes between two goroutines,
// parking on doorbells, and checks every byte (run with -race: the ring is
// on the heap, where the race detector sees it).
func TestRingConcurrent(t *testing.T) {
	for _, spin := range []time.Duration{0, 20 * time.Microsecond} {
		t.Run(fmt.Sprint("spin=", spin), func(t *testing.T) {
			data, space := newBells(t)
			p, c := newTestRing(t, 4096, WithDoorbells(data, space), WithSpin(spin))
			n := 20000
			if testing.Short() {
				n = 5000
			}
			pattern := testPattern()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errc := make(chan error, 2)
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(1, 2))
				for i := 0; i < n; i++ {
					size := rng.IntN(p.MaxBody() + 1)
					off := i % 997
					if err := p.Write(ctx, Header{Kind: 1, ID: uint64(i), Aux: uint32(size)}, pattern[off:off+size]); err != nil {
						errc <- err
						return
					}
				}
			})
			wg.Go(func() {
				for i := 0; i < n; {
					if err := c.Wait(ctx); err != nil {
						errc <- err
						return
					}
					for {
						f, err := c.Next()
						if err == ErrRingEmpty {
							break
						}
						if err != nil {
							errc <- err
							return
						}
						off := i % 997
						if f.ID != uint64(i) || int(f.Aux) != len(f.Body) || !bytes.Equal(f.Body, pattern[off:off+len(f.Body)]) {
							errc <- fmt.Errorf("frame %d: bad id %d or body", i, f.ID)
							return
						}
						i++
					}
				}
			})
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
		})
	}
}

func TestWaitEndsOnCancelAndClose(t *testing.T) {
	data, space := newBells(t)
	p, c := newTestRing(t, 1024, WithDoorbells(data, space), WithSpin(0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("consumer wait: %v", err)
	}
	for p.TryWrite(Header{Kind: 1}, make([]byte, 100)) == nil {
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel2)
	if err := p.Write(ctx2, Header{Kind: 1}, make([]byte, 100)); !errors.Is(err, context.Canceled) {
		t.Fatalf("producer wait: %v", err)
	}
	// A closed doorbell ends a parked producer.
	done := make(chan error, 1)
	go func() { done <- p.Write(context.Background(), Header{Kind: 1}, make([]byte, 100)) }()
	time.Sleep(10 * time.Millisecond)
	space.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("parked producer not woken by Close")
	}
	// The doorbell still works after a cancelled wait: no stale deadline.
	c.Release()
	for {
		if _, err := c.Next(); err != nil {
			break
		}
	}
	c.Release()
	go func() {
		time.Sleep(5 * time.Millisecond)
		p2 := p
		p2.TryWrite(Header{Kind: 9})
	}()
	if err := c.Wait(context.Background()); err != nil {
		t.Fatalf("wait after cancelled waits: %v", err)
	}
}

func newBells(t testing.TB) (*Doorbell, *Doorbell) {
	t.Helper()
	a, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// testPattern returns 128 KiB of pseudo-random bytes; frame i carries the
// slice at a position derived from i, so a receiver can check every byte.
func testPattern() []byte {
	rng := rand.New(rand.NewPCG(42, 42))
	b := make([]byte, 128<<10+1024)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestUnflushedAndHeld: the producer counts the bytes committed since its
// last Flush, padding included, and the consumer the bytes read since its
// last Release: what a writer or reader of a long batch looks at to
// publish or give back part of it early.
func TestUnflushedAndHeld(t *testing.T) {
	p, c := newTestRing(t, 1024)
	if p.Unflushed() != 0 || c.Held() != 0 {
		t.Fatalf("new ring: unflushed %d, held %d", p.Unflushed(), c.Held())
	}
	body := make([]byte, 100)
	for range 3 {
		if err := p.Append(Header{Kind: 1}, body); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := p.Unflushed(), 3*FrameSize(100); got != want {
		t.Fatalf("unflushed %d, want %d", got, want)
	}
	p.Flush()
	if p.Unflushed() != 0 {
		t.Fatalf("unflushed %d after Flush", p.Unflushed())
	}
	for i := range 2 {
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		if got, want := c.Held(), (i+1)*FrameSize(100); got != want {
			t.Fatalf("held %d after %d frames, want %d", got, i+1, want)
		}
	}
	c.Release()
	if c.Held() != 0 {
		t.Fatalf("held %d after Release", c.Held())
	}
	// A frame that does not fit before the end pads: the pad counts on
	// both sides, as the room it takes.
	for range 2 { // the head at 640 of 1024
		if err := p.Append(Header{Kind: 1}, body); err != nil {
			t.Fatal(err)
		}
	}
	p.Flush()
	for range 3 {
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	c.Release()
	before := p.Position()
	big := make([]byte, MaxBody(1024))
	if err := p.Append(Header{Kind: 1}, big); err != nil {
		t.Fatal(err)
	}
	if got, want := p.Unflushed(), int(p.Position()-before); got != want || got <= FrameSize(len(big)) {
		t.Fatalf("unflushed %d with padding, want %d (more than the frame's %d)", got, want, FrameSize(len(big)))
	}
	p.Flush()
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	if got := c.Held(); got != int(p.Position()-before) {
		t.Fatalf("held %d, want %d", got, p.Position()-before)
	}
}

// FlushLater publishes like Flush and hands back the doorbell of a
// consumer that sleeps, unrung, once per announcement.
func TestFlushLater(t *testing.T) {
	bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer bell.Close()
	p, c := newTestRing(t, 4096, WithDoorbells(bell, nil))
	if b := p.FlushLater(); b != nil {
		t.Fatal("nothing to publish, yet a doorbell to ring")
	}
	if err := p.Append(Header{Kind: 1, ID: 1}, []byte("awake")); err != nil {
		t.Fatal(err)
	}
	if b := p.FlushLater(); b != nil {
		t.Fatal("the consumer does not sleep, yet a doorbell to ring")
	}
	if f, err := c.Next(); err != nil || string(f.Body) != "awake" {
		t.Fatalf("published frame: %q %v", f.Body, err)
	}
	c.Arm()
	if err := p.Append(Header{Kind: 1, ID: 2}, []byte("asleep")); err != nil {
		t.Fatal(err)
	}
	if b := p.FlushLater(); b != bell {
		t.Fatalf("a sleeping consumer's doorbell: got %p, want %p", b, bell)
	}
	if f, err := c.Next(); err != nil || string(f.Body) != "asleep" {
		t.Fatalf("published frame: %q %v", f.Body, err)
	}
	if err := p.Append(Header{Kind: 1, ID: 3}, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if b := p.FlushLater(); b != nil {
		t.Fatal("the announcement was taken: no second doorbell until the consumer sleeps again")
	}
}
