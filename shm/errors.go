package shm

import (
	"errors"
	"fmt"
)

var (
	// ErrRingFull is returned by non-blocking writes when the ring has no
	// room for the frame yet. Retry after the consumer catches up, or use
	// the blocking Write.
	ErrRingFull = errors.New("shm: ring full")

	// ErrRingEmpty is returned by non-blocking reads when no frame is ready.
	ErrRingEmpty = errors.New("shm: ring empty")

	// ErrTooLarge is returned when a frame can never fit the ring, whatever
	// the consumer does. Nothing has been written.
	ErrTooLarge = errors.New("shm: frame too large")

	// ErrCorrupt is matched (with errors.Is) by every *FrameError: the peer
	// wrote counters or frames that break the ring's rules. The ring cannot
	// be used any more; the connection that owns it should be dropped.
	ErrCorrupt = errors.New("shm: ring corrupt")

	// ErrClosed is returned by waits and doorbells after Close.
	ErrClosed = errors.New("shm: closed")

	// ErrBadSegment is matched by every *SegmentError: a received segment
	// is not one this package can use (wrong magic, version, size, seals or
	// geometry).
	ErrBadSegment = errors.New("shm: bad segment")

	// ErrNotReserved is returned by Commit without a matching Reserve, or
	// by Release with no frame read.
	ErrNotReserved = errors.New("shm: nothing reserved")
)

// FrameError reports a rule of the ring broken by the peer: a counter out
// of range, or a frame header that does not fit. It matches ErrCorrupt.
type FrameError struct {
	Pos    uint64 // ring position (monotonic counter) where the problem is
	Reason string // what was wrong, e.g. "length exceeds published data"
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("shm: ring corrupt at position %d: %s", e.Pos, e.Reason)
}

// Is reports whether target is ErrCorrupt.
func (e *FrameError) Is(target error) bool { return target == ErrCorrupt }

// SegmentError reports why a segment was refused. It matches ErrBadSegment
// and unwraps to the underlying system error, if any.
type SegmentError struct {
	Reason string
	Err    error // system error, or nil
}

func (e *SegmentError) Error() string {
	if e.Err != nil {
		return "shm: bad segment: " + e.Reason + ": " + e.Err.Error()
	}
	return "shm: bad segment: " + e.Reason
}

// Is reports whether target is ErrBadSegment.
func (e *SegmentError) Is(target error) bool { return target == ErrBadSegment }

// Unwrap returns the underlying system error, if any.
func (e *SegmentError) Unwrap() error { return e.Err }

// OpError reports a failed system call: which operation and on what.
type OpError struct {
	Op  string // "memfd_create", "mmap", "sendmsg", …
	Err error
}

func (e *OpError) Error() string { return "shm: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the system error.
func (e *OpError) Unwrap() error { return e.Err }
