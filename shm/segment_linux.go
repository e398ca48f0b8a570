package shm

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Segment header, at offset 0 of the memfd, little-endian:
//
//	offset size field
//	0      8    magic     "SWBDSEG1"
//	8      4    version   layout version, SegmentVersion
//	12     4    rings     number of rings, 1 to MaxRings
//	16     8    size      total bytes of the memfd; must equal its sealed size
//	24     8    reserved  zero
//	32     16×n ring descriptors: offset (u64), data capacity (u32) and
//	            flags (u32) of ring i; the data area starts at a page
//	            boundary after the header page, data areas do not overlap.
//	            Flags: bit 0 (ringCreatorWrites) says the creator of the
//	            segment writes the ring; bits 8-15 are the index of the
//	            ring's data doorbell, bits 16-23 of its space doorbell, in
//	            the link's list of doorbells; the other bits are zero.
//	512    512×n ring control blocks (see layout.go): ring i's at
//	            512 + 512×i, in the header page.
//
// Every ring's control words share the header page, so that a connection
// nobody uses touches one page of the segment, not one per ring (layout
// version 2; version 1 put each control block before its data area). The
// page is the segment's first, so every control word is 128-byte aligned.
const (
	segOffMagic   = 0
	segOffVersion = 8
	segOffRings   = 12
	segOffSize    = 16
	segOffDesc    = 32
	segDescSize   = 16
	segHeaderPage = 4096
	segOffCtl     = 512 // ring 0's control block; ring i's at segOffCtl + i*ringCtlSize

	// SegmentVersion is the layout version this package writes and accepts.
	SegmentVersion = 2
	// MaxRings is the most rings one segment holds.
	MaxRings = 4
	// MaxSegmentSize bounds what OpenSegment maps.
	MaxSegmentSize = 4 << 30

	pageSize = 4096
)

var segMagic = binary.LittleEndian.Uint64([]byte("SWBDSEG1"))

// requiredSeals are the seals a segment must carry: nobody can change its
// size (a shrink under a peer's mapping would SIGBUS it), nor the seals.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// Ring descriptor flags.
const (
	ringCreatorWrites = 1 << 0 // the segment's creator is the ring's producer
	ringDataShift     = 8      // bits 8-15: data doorbell index
	ringSpaceShift    = 16     // bits 16-23: space doorbell index
	ringFlagsKnown    = ringCreatorWrites | 0xff<<ringDataShift | 0xff<<ringSpaceShift
)

type ringDesc struct {
	off, capacity uint64
	flags         uint32
}

// Segment is a sealed memfd mapped shared, holding a header and rings.
type Segment struct {
	mem   []byte
	fd    atomic.Int32 // -1 once dropped or closed
	rings []ringDesc
	once  sync.Once
	err   error
	// retired: Retire replaced the shared pages with private ones.
	retired bool
}

func newSegment(mem []byte, fd int, rings []ringDesc) *Segment {
	s := &Segment{mem: mem, rings: rings}
	s.fd.Store(int32(fd))
	return s
}

func pageAlign(n uint64) uint64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// RingSpec describes one ring of a new segment.
type RingSpec struct {
	Capacity      int  // data bytes: a power of two in [MinRingCapacity, MaxRingCapacity]
	CreatorWrites bool // the segment's creator produces; otherwise the peer does

	// DataBell and SpaceBell index the link's doorbells (see NewLink): the
	// producer rings DataBell for a sleeping consumer, the consumer rings
	// SpaceBell for a producer waiting for room. Rings may share a
	// doorbell when the same goroutine waits for all of them.
	DataBell, SpaceBell int
}

// CreateSegment creates a sealed memfd holding one ring per capacity (each
// a power of two between MinRingCapacity and MaxRingCapacity), maps it and
// writes its header. Nothing appears in any file system. name shows in
// /proc/PID/fd and maps, for debugging. The creator writes every ring; use
// CreateSegmentSpec to say otherwise.
func CreateSegment(name string, capacities ...int) (*Segment, error) {
	specs := make([]RingSpec, len(capacities))
	for i, c := range capacities {
		specs[i] = RingSpec{Capacity: c, CreatorWrites: true}
	}
	return CreateSegmentSpec(name, specs...)
}

// CreateSegmentSpec is CreateSegment with each ring's direction given.
func CreateSegmentSpec(name string, specs ...RingSpec) (*Segment, error) {
	if len(specs) == 0 || len(specs) > MaxRings {
		return nil, fmt.Errorf("shm: a segment holds 1 to %d rings, not %d", MaxRings, len(specs))
	}
	rings := make([]ringDesc, len(specs))
	size := uint64(segHeaderPage)
	for i, sp := range specs {
		c := sp.Capacity
		if c < 0 {
			return nil, checkCapacity(0)
		}
		if err := checkCapacity(uint64(c)); err != nil {
			return nil, err
		}
		if sp.DataBell < 0 || sp.DataBell > 0xff || sp.SpaceBell < 0 || sp.SpaceBell > 0xff {
			return nil, fmt.Errorf("shm: ring %d doorbell index out of range", i)
		}
		rings[i] = ringDesc{off: size, capacity: uint64(c), flags: uint32(sp.DataBell)<<ringDataShift | uint32(sp.SpaceBell)<<ringSpaceShift}
		if sp.CreatorWrites {
			rings[i].flags |= ringCreatorWrites
		}
		size += pageAlign(uint64(c))
	}
	if size > MaxSegmentSize {
		return nil, fmt.Errorf("shm: segment of %d bytes exceeds %d", size, MaxSegmentSize)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, &OpError{Op: "memfd_create", Err: err}
	}
	fail := func(op string, err error) (*Segment, error) {
		unix.Close(fd)
		return nil, &OpError{Op: op, Err: err}
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fail("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		return fail("seal", err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap", err)
	}
	binary.LittleEndian.PutUint64(mem[segOffMagic:], segMagic)
	binary.LittleEndian.PutUint32(mem[segOffVersion:], SegmentVersion)
	binary.LittleEndian.PutUint32(mem[segOffRings:], uint32(len(rings)))
	binary.LittleEndian.PutUint64(mem[segOffSize:], size)
	for i, r := range rings {
		d := mem[segOffDesc+i*segDescSize:]
		binary.LittleEndian.PutUint64(d[0:], r.off)
		binary.LittleEndian.PutUint32(d[8:], uint32(r.capacity))
		binary.LittleEndian.PutUint32(d[12:], r.flags)
	}
	return newSegment(mem, fd, rings), nil
}

// OpenSegment maps a segment received from another process. It takes
// ownership of fd (closing it on error) and refuses, with a *SegmentError,
// a memfd that is not sealed against resizing, or whose header does not
// describe a valid layout of exactly its size.
func OpenSegment(fd int) (*Segment, error) {
	bad := func(reason string, err error) (*Segment, error) {
		unix.Close(fd)
		return nil, &SegmentError{Reason: reason, Err: err}
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return bad("cannot read seals (not a memfd?)", err)
	}
	if seals&requiredSeals != requiredSeals {
		return bad(fmt.Sprintf("seals %#x lack shrink, grow or seal", seals), nil)
	}
	if seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) != 0 {
		return bad("sealed against writing", nil)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return bad("fstat", err)
	}
	size := uint64(st.Size)
	if st.Size < segHeaderPage || size > MaxSegmentSize || size%pageSize != 0 {
		return bad(fmt.Sprintf("size %d out of range", st.Size), nil)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return bad("mmap", err)
	}
	rings, reason := parseSegmentHeader(mem, size)
	if reason != "" {
		unix.Munmap(mem)
		return bad(reason, nil)
	}
	return newSegment(mem, fd, rings), nil
}

// parseSegmentHeader validates the header in mem against the sealed size
// and returns a private copy of the geometry, or the reason it is refused.
func parseSegmentHeader(mem []byte, size uint64) ([]ringDesc, string) {
	if uint64(len(mem)) < segHeaderPage {
		return nil, "shorter than its header"
	}
	if binary.LittleEndian.Uint64(mem[segOffMagic:]) != segMagic {
		return nil, "wrong magic"
	}
	if v := binary.LittleEndian.Uint32(mem[segOffVersion:]); v != SegmentVersion {
		return nil, fmt.Sprintf("layout version %d, want %d", v, SegmentVersion)
	}
	if s := binary.LittleEndian.Uint64(mem[segOffSize:]); s != size {
		return nil, fmt.Sprintf("header says %d bytes, memfd has %d", s, size)
	}
	n := binary.LittleEndian.Uint32(mem[segOffRings:])
	if n == 0 || n > MaxRings {
		return nil, fmt.Sprintf("%d rings", n)
	}
	rings := make([]ringDesc, n)
	next := uint64(segHeaderPage)
	for i := range rings {
		d := mem[segOffDesc+i*segDescSize:]
		r := ringDesc{
			off:      binary.LittleEndian.Uint64(d[0:]),
			capacity: uint64(binary.LittleEndian.Uint32(d[8:])),
			flags:    binary.LittleEndian.Uint32(d[12:]),
		}
		if checkCapacity(r.capacity) != nil {
			return nil, fmt.Sprintf("ring %d capacity %d", i, r.capacity)
		}
		if r.flags&^ringFlagsKnown != 0 {
			return nil, fmt.Sprintf("ring %d has unknown flags %#x", i, r.flags)
		}
		if r.off < next || r.off%pageSize != 0 || r.off > size || size-r.off < r.capacity {
			return nil, fmt.Sprintf("ring %d at offset %d does not fit", i, r.off)
		}
		next = r.off + r.capacity
		rings[i] = r
	}
	return rings, ""
}

// Fd returns the memfd, for passing to another process. Valid until Close.
func (s *Segment) Fd() int { return int(s.fd.Load()) }

// DropFd closes the segment's memfd and keeps the mapping: once the peer
// holds its own copy of the descriptor (sent with SCM_RIGHTS), the
// creator needs it no more, and a connection costs one descriptor less.
// Fd returns -1 afterwards. It is idempotent, and safe with Close.
func (s *Segment) DropFd() {
	if fd := s.fd.Swap(-1); fd >= 0 {
		unix.Close(int(fd))
	}
}

// Size returns the mapped size in bytes.
func (s *Segment) Size() int { return len(s.mem) }

// NumRings returns the number of rings in the segment.
func (s *Segment) NumRings() int { return len(s.rings) }

// CreatorWrites reports whether the segment's creator produces ring i.
func (s *Segment) CreatorWrites(i int) bool { return s.rings[i].flags&ringCreatorWrites != 0 }

// Bells returns the indices of ring i's data and space doorbells.
func (s *Segment) Bells(i int) (data, space int) {
	f := s.rings[i].flags
	return int(f >> ringDataShift & 0xff), int(f >> ringSpaceShift & 0xff)
}

// Ring returns ring i's control block and data area, to pass to
// NewProducerAt or NewConsumerAt. They are valid until Close.
func (s *Segment) Ring(i int) (ctl, data []byte) {
	r := s.rings[i]
	c := segOffCtl + i*ringCtlSize
	end := r.off + r.capacity
	return s.mem[c : c+ringCtlSize : c+ringCtlSize], s.mem[r.off:end:end]
}

// Retire gives the shared memory back while views of it may still be in
// use: it closes the memfd and maps private zero pages over the segment,
// at the same addresses, in one step. Whoever still holds a view of a
// ring (a handler that ignored its context, reading its request) reads
// zeros from then on, as if the peer had overwritten the ring, and never
// faults; the shared pages go once the peer lets go of them too. Close
// unmaps the placeholder later. Retire is idempotent, does nothing after
// Close, and must not run concurrently with Close.
func (s *Segment) Retire() error {
	s.DropFd()
	if s.retired || s.mem == nil {
		return nil
	}
	s.retired = true
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(unsafe.SliceData(s.mem)), uintptr(len(s.mem)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED)
	if err != nil {
		return &OpError{Op: "retire segment", Err: err}
	}
	return nil
}

// Close unmaps the segment and closes the memfd. Nothing may use the
// segment's rings afterwards. Close is idempotent.
func (s *Segment) Close() error {
	s.once.Do(func() {
		err := unix.Munmap(s.mem)
		if fd := s.fd.Swap(-1); fd >= 0 {
			if cerr := unix.Close(int(fd)); err == nil {
				err = cerr
			}
		}
		s.mem = nil
		if err != nil {
			s.err = &OpError{Op: "close segment", Err: err}
		}
	})
	return s.err
}

func closeFd(fd int) { unix.Close(fd) }
