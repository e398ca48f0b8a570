// Package shm implements the shared-memory transport of Switchboard: sealed
// memfd segments, single-producer single-consumer rings of variable-length
// frames, eventfd wake-ups, and the Unix-socket helpers (SCM_RIGHTS fd
// passing, SO_PEERCRED credentials) that a handshake needs to hand a segment
// to another process.
//
// The package knows bytes only. It has no actors and no protobuf; the layers
// above give meaning to a frame's kind, service, command and body.
//
// # Layout
//
// A [Segment] is one memfd holding a header and a few rings. Each ring is a
// control block of four 128-byte lines (head, tail, consumer-sleeping flag,
// producer-waiting flag) and a data area whose size is a power of two; in a
// segment, every ring's control block shares the header page, so that idle
// rings touch one page; in process memory (tests, the socket transport's
// local rings), the data area follows its control block. A frame is a 24-byte little-endian [Header] followed by its body,
// padded to 8 bytes. A frame never crosses the end of the data area: the
// producer writes a pad frame there instead and continues at the start.
// The exact byte layout is written down in layout.go and frame.go and pinned
// by tests.
//
// # Trust
//
// The peer can write anything into shared memory at any time. Every counter,
// length and offset read from a mapping is checked before use, and a
// violation is reported as a [*FrameError] (which matches [ErrCorrupt]),
// never as a panic or an out-of-bounds access. Geometry (sizes, offsets) is
// read from the peer once, validated against the sealed size of the memfd,
// and kept in private memory. A frame body returned by a zero-copy read is a
// view of shared memory: its bytes may change under the reader, so callers
// decode them defensively or copy them first.
//
// # Concurrency
//
// A [Producer] is used by one goroutine at a time, and so is a [Consumer];
// the two ends of one ring may live in different goroutines or processes.
// Counters are published with sync/atomic (sequentially consistent on every
// platform Go supports); the peer may assume that the bytes of a frame are
// written before the head that covers them is published, and that a frame
// is no longer read once the tail passes it.
//
// # Wake-ups
//
// A consumer that finds its ring empty may spin briefly ([SpinPolicy]), then
// sets the sleeping flag, re-checks the ring and parks on a [Doorbell] (an
// eventfd watched by Go's netpoller, so an idle ring holds no OS thread). A
// producer rings the doorbell only when the flag is set, once per flush. A
// producer facing a full ring parks the same way on the space doorbell. Both
// waits end on context cancellation and when the doorbell is closed (the
// owner closes it when the peer is gone).
package shm
