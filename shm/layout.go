package shm

import (
	"sync/atomic"
	"unsafe"
)

// This file holds every unsafe conversion of the package. Everything else
// reads and writes shared memory through the accessors defined here, or
// through encoding/binary on byte slices.

// cacheLine is the spacing of words written by different sides, so that a
// producer and a consumer never write the same cache line (128 bytes: some
// CPUs prefetch lines in adjacent pairs).
const cacheLine = 128

// Ring control block. Offsets are from the start of the block, which sits
// in a segment's header page (segment_linux.go), or in front of the data
// area in a region of process memory. Every word is a little-endian
// uint64 used only through sync/atomic.
//
//	offHead     bytes ever produced: written by the producer, read by the consumer.
//	            It only grows; head-tail is the number of bytes ready to read.
//	offTail     bytes ever consumed: written by the consumer, read by the producer.
//	            It only grows and never passes head.
//	offSleeping 1 while the consumer is parked on the data doorbell or about to
//	            park; set by the consumer, cleared by the producer (which then
//	            rings the doorbell) or by the consumer when it finds data.
//	offWaiting  1 while the producer is parked on the space doorbell or about to
//	            park; set by the producer, cleared by the consumer (which then
//	            rings the doorbell) or by the producer when it finds space.
const (
	offHead     = 0 * cacheLine
	offTail     = 1 * cacheLine
	offSleeping = 2 * cacheLine
	offWaiting  = 3 * cacheLine
	ringCtlSize = 4 * cacheLine
)

// atomicWord returns the 8-byte word at b[off:off+8] as an atomic. The caller
// has checked that the word is in bounds; the alignment is checked here
// because a misaligned atomic is not atomic on every CPU.
func atomicWord(b []byte, off int) *atomic.Uint64 {
	w := b[off : off+8 : off+8] // bounds check; panics only on a layout bug of ours
	// The pointer stays inside b, which outlives the ring that uses it.
	p := unsafe.Pointer(&w[0])
	if uintptr(p)%8 != 0 {
		panic("shm: misaligned atomic word")
	}
	return (*atomic.Uint64)(p) // an 8-aligned uint64 inside b
}

// isAligned reports whether b starts on an 8-byte boundary.
func isAligned(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	return uintptr(unsafe.Pointer(&b[0]))%8 == 0 // address arithmetic only, nothing dereferenced
}

// AlignedBuffer returns n zeroed bytes of ordinary Go memory starting on an
// 8-byte boundary: a ring region for tests and for in-process use, where the
// race detector can see every access (it cannot see mmapped memory).
func AlignedBuffer(n int) []byte {
	if n <= 0 {
		return nil
	}
	words := make([]uint64, (n+7)/8)
	// A []uint64 is 8-aligned; view its first n bytes.
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}
