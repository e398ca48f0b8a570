package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"
)

// fuzzCapacity is small so that fuzzed inputs cover whole rings and wraps.
const fuzzCapacity = 1024

// validRing returns ring data holding a few real frames, one of them
// wrapped after a pad, as the producer writes them: a seed for the fuzzer.
func validRing() (data []byte, head, tail uint64) {
	region := AlignedBuffer(RingRegionSize(fuzzCapacity))
	p, _ := NewProducer(region, WithSpin(0))
	c, _ := NewConsumer(region, WithSpin(0))
	for i := 0; i < 5; i++ {
		p.TryWrite(Header{Kind: 1, ID: uint64(i)}, bytes.Repeat([]byte{byte(i)}, 150))
		if i < 3 {
			c.Next()
			c.Release()
		}
	}
	return region[ringCtlSize:], p.head, c.tail
}

// FuzzDecodeFrame fills a ring with arbitrary bytes and counters, as a
// hostile peer could, rotated at a fuzzer-chosen point so that frames wrap,
// and reads it: the consumer must return frames inside the ring or a
// *FrameError, never panic, and never hand out bytes past the head.
func FuzzDecodeFrame(f *testing.F) {
	data, head, tail := validRing()
	f.Add(data, head, tail, uint16(0))
	f.Add(data, head, tail, uint16(333))
	f.Add(data, head+8, tail, uint16(0))
	f.Add(data, head, tail+8, uint16(0))
	f.Add(data, tail, head, uint16(0))
	f.Add([]byte{}, uint64(0), uint64(0), uint16(0))
	f.Add([]byte{8, 0, 0, 0, 0xff, 0xff, 0, 0}, uint64(1024), uint64(1016), uint16(0))
	f.Add(AppendFrame(nil, Header{Kind: 2, ID: 7}, []byte("hello")), uint64(32), uint64(0), uint16(1020))
	f.Fuzz(func(t *testing.T, mem []byte, head, tail uint64, split uint16) {
		region := AlignedBuffer(RingRegionSize(fuzzCapacity))
		d := region[ringCtlSize:]
		s := int(split) % fuzzCapacity
		// Place the input at the split point, wrapping around the end.
		for i, b := range mem {
			if i >= fuzzCapacity {
				break
			}
			d[(s+i)%fuzzCapacity] = b
		}
		binary.LittleEndian.PutUint64(region[offHead:], head)
		binary.LittleEndian.PutUint64(region[offTail:], tail)
		c, err := NewConsumer(region, WithSpin(0))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("NewConsumer: unexpected error type %v", err)
			}
			return
		}
		for range 2 * fuzzCapacity / frameAlign {
			fr, err := c.Next()
			if err == ErrRingEmpty {
				return
			}
			if err != nil {
				var fe *FrameError
				if !errors.As(err, &fe) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v is not a *FrameError", err)
				}
				if _, err2 := c.Next(); err2 != err {
					t.Fatalf("corruption not sticky: %v then %v", err, err2)
				}
				return
			}
			if c.tail > head {
				t.Fatalf("read past the head: tail %d head %d", c.tail, head)
			}
			if len(fr.Body) > c.MaxBody() || fr.Kind == 0 || fr.Kind == KindPad {
				t.Fatalf("bad frame handed out: kind %d len %d", fr.Kind, len(fr.Body))
			}
			c.Release()
		}
	})
}

// FuzzRoundTrip writes frames built from the input at a fuzzer-chosen
// starting offset and checks that they read back unchanged, and that
// DecodeFrame of arbitrary bytes either fails cleanly or re-encodes to the
// same bytes.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("hello world"), uint16(0), uint16(5))
	f.Add(bytes.Repeat([]byte{0xff}, 600), uint16(1000), uint16(450))
	f.Add(AppendFrame(nil, Header{Kind: 3, Flags: 1, Service: 2, Command: 3, Aux: 4, ID: 5}, []byte("body")), uint16(8), uint16(1))
	f.Fuzz(func(t *testing.T, in []byte, start, chunk uint16) {
		// DecodeFrame on arbitrary bytes.
		fr, n, err := DecodeFrame(in, 1<<16)
		switch {
		case err == nil:
			re := AppendFrame(nil, fr.Header, fr.Body)
			if n != len(re) || !bytes.Equal(re[:HeaderSize+len(fr.Body)], in[:HeaderSize+len(fr.Body)]) {
				t.Fatalf("re-encoding differs")
			}
		case err == ErrIncomplete:
		default:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeFrame: %v", err)
			}
		}
		// Ring round trip from a fuzzed starting position.
		region := AlignedBuffer(RingRegionSize(fuzzCapacity))
		pos := uint64(start) &^ 7
		binary.LittleEndian.PutUint64(region[offHead:], pos)
		binary.LittleEndian.PutUint64(region[offTail:], pos)
		p, err := NewProducer(region, WithSpin(0))
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewConsumer(region, WithSpin(0))
		if err != nil {
			t.Fatal(err)
		}
		step := int(chunk)%(p.MaxBody()+1) + 1
		for i, off := 0, 0; off < len(in); i++ {
			end := min(off+step, len(in), off+p.MaxBody())
			if err := p.TryWrite(Header{Kind: 1, ID: uint64(i)}, in[off:end]); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			got, err := c.Read(nil)
			if err != nil || got.ID != uint64(i) || !bytes.Equal(got.Body, in[off:end]) {
				t.Fatalf("frame %d: %v", i, err)
			}
			off = end
		}
	})
}

// FuzzSegmentHeader: whatever header a peer writes, parseSegmentHeader
// either refuses it or returns a geometry whose rings lie inside the
// segment, past the header page, page-aligned, apart, with valid
// capacities; and Ring then hands out control blocks inside the header
// page, apart from each other and from the data areas.
func FuzzSegmentHeader(f *testing.F) {
	good := func(size uint64, rings ...ringDesc) []byte {
		mem := make([]byte, segHeaderPage)
		validHeader(size, rings...)(mem)
		return mem
	}
	f.Add(good(3*pageSize, ringDesc{off: pageSize, capacity: 4096}), uint64(3*pageSize))
	f.Add(good(pageSize+3*4096, ringDesc{off: pageSize, capacity: 4096}, ringDesc{off: 2 * pageSize, capacity: 4096, flags: ringCreatorWrites},
		ringDesc{off: 3 * pageSize, capacity: 4096, flags: ringCreatorWrites | 1<<ringDataShift}), uint64(pageSize+3*4096))
	f.Add(good(2*pageSize, ringDesc{off: 0, capacity: 4096}), uint64(2*pageSize))
	f.Fuzz(func(t *testing.T, header []byte, size uint64) {
		size = min(size, 64*pageSize) &^ (pageSize - 1)
		if size < segHeaderPage {
			size = segHeaderPage
		}
		mem := AlignedBuffer(int(size))
		copy(mem[:segHeaderPage], header)
		rings, reason := parseSegmentHeader(mem, size)
		if reason != "" {
			return
		}
		if len(rings) == 0 || len(rings) > MaxRings {
			t.Fatalf("%d rings accepted", len(rings))
		}
		next := uint64(segHeaderPage)
		for i, r := range rings {
			if checkCapacity(r.capacity) != nil || r.off%pageSize != 0 || r.off < next || r.off+r.capacity > size {
				t.Fatalf("ring %d accepted: %+v (segment of %d bytes)", i, r, size)
			}
			next = r.off + r.capacity
		}
		s := &Segment{mem: mem, rings: rings}
		prevCtl := -1
		for i := range rings {
			ctl, data := s.Ring(i)
			c := int(uintptr(unsafe.Pointer(&ctl[0])) - uintptr(unsafe.Pointer(&mem[0])))
			if c+len(ctl) > segHeaderPage || c < segOffDesc+MaxRings*segDescSize || c <= prevCtl || c%cacheLine != 0 {
				t.Fatalf("ring %d's control block at %d", i, c)
			}
			prevCtl = c
			clear(ctl) // a new ring's counters
			if _, err := NewProducerAt(ctl, data); err != nil {
				t.Fatalf("ring %d: %v", i, err)
			}
		}
	})
}
