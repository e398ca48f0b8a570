package main

// The bare shared-memory peer is the physical floor the others are read
// against: raw atomics and futexes on a mapped page, which Go cannot
// express without unsafe. It lives in this benchmark module, outside the
// project's own packages, where unsafe stays confined to shm/.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The bare shared-memory reference, with nothing of an IPC system but the
// memory and the wake-up. The client creates a memfd, maps it, and passes
// it to the server over a Unix socket with one byte: the mode.
//
// Mode 0, ping-pong (rpc):
//
//	offset 0:  turn     uint32: 1 a request is ready, 2 a response is ready
//	offset 4:  sleepers uint32: waiters parked (or about to park) on turn
//	offset 8:  length   uint32: the payload's length
//	offset 64:            the request payload (up to shmMax bytes)
//	offset 64 + shmMax:   the response payload
//
// The server copies the request into the response area: the one copy
// every other peer makes too.
//
// Mode 1, stream (events): a single-producer single-consumer ring of
// fixed slots (8-byte length, then the payload rounded up to 8 bytes),
// shmMax bytes of them, the server producing:
//
//	offset 0:   head     uint32: slots published (wraps)
//	offset 4:   sleepers uint32: consumers parked on head
//	offset 128: tail     uint32: slots consumed (wraps)
//	offset 132: sleepers uint32: producers parked on tail
//	offset 256: the slots
//
// The client asks for windows of messages over the socket (8 bytes:
// count, size), as with every other peer; it copies each payload out.
//
// A waiter spins up to 20 µs when its process has more than one CPU, then
// parks on a futex on the word (FUTEX_WAIT on the shared word); a writer
// wakes it only when the word's sleepers count is non-zero.

const (
	shmMax  = 1 << 20
	shmSize = 64 + 2*shmMax
	shmSpin = 20 * time.Microsecond

	futexWait = 0 // FUTEX_WAIT, linux/futex.h
	futexWake = 1 // FUTEX_WAKE
)

func init() {
	register("shm", map[string]roleFunc{
		"serve":  shmServe,
		"rpc":    shmRPC,
		"events": shmEvents,
	})
}

// word is a futex word in shared memory and its count of parked waiters.
type word struct{ v, sleepers *atomic.Uint32 }

// at returns the word at off and its sleepers count at off+4. The offsets
// are 8-aligned within a page-aligned mapping, and both words are only
// ever accessed atomically.
func at(mem []byte, off int) word {
	return word{(*atomic.Uint32)(unsafe.Pointer(&mem[off])), (*atomic.Uint32)(unsafe.Pointer(&mem[off+4]))}
}

// wait waits until ok(value) holds, spinning first when spin is set, then
// parked; stop is checked every 100 ms while parked.
func (w word) wait(ok func(uint32) bool, spin bool, stop *atomic.Bool) error {
	if spin {
		start := time.Now()
		for i := 0; ; i++ {
			if ok(w.v.Load()) {
				return nil
			}
			if i&63 == 63 && time.Since(start) > shmSpin {
				break
			}
		}
	}
	w.sleepers.Add(1)
	defer w.sleepers.Add(^uint32(0))
	ts := unix.NsecToTimespec(int64(100 * time.Millisecond))
	for {
		cur := w.v.Load()
		if ok(cur) {
			return nil
		}
		if stop != nil && stop.Load() {
			return errors.New("peer gone")
		}
		// FUTEX_WAIT (not _PRIVATE: the word is shared between processes)
		// returns at once if the word is no longer cur.
		unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w.v)), futexWait, uintptr(cur),
			uintptr(unsafe.Pointer(&ts)), 0, 0)
	}
}

// store publishes v and wakes a parked waiter.
func (w word) store(v uint32) {
	w.v.Store(v)
	if w.sleepers.Load() != 0 {
		unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w.v)), futexWake, 1, 0, 0, 0)
	}
}

// shmSeg is one mapped segment.
type shmSeg struct {
	mem    []byte
	turn   word // ping-pong
	length *atomic.Uint32
	head   word // stream
	tail   word
	spin   bool
}

func mapSeg(fd int) (*shmSeg, error) {
	mem, err := unix.Mmap(fd, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &shmSeg{
		mem:    mem,
		turn:   at(mem, 0),
		length: (*atomic.Uint32)(unsafe.Pointer(&mem[8])), // 8-aligned, atomic only
		head:   at(mem, 0),
		tail:   at(mem, 128),
		spin:   runtime.GOMAXPROCS(0) > 1,
	}, nil
}

func (s *shmSeg) req() []byte  { return s.mem[64 : 64+shmMax] }
func (s *shmSeg) resp() []byte { return s.mem[64+shmMax:] }

// slots returns the stream's slot count and slot size for size-byte
// messages.
func slots(size int) (n, slot uint32) {
	slot = uint32(8 + (size+7)&^7)
	return shmMax / slot, slot
}

func (s *shmSeg) slot(i, slot uint32) []byte {
	off := 256 + int(i)*int(slot)
	return s.mem[off : off+int(slot)]
}

func shmServe(ctx context.Context, a *args) (*result, error) {
	path := filepath.Join(a.dir, "shm.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	ready(path)
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		go shmServeConn(c)
	}
}

func shmServeConn(c *net.UnixConn) {
	defer c.Close()
	buf, oob := make([]byte, 8), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil || n != 1 {
		return
	}
	mode := buf[0]
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return
	}
	s, err := mapSeg(fds[0])
	unix.Close(fds[0])
	if err != nil {
		return
	}
	defer unix.Munmap(s.mem)
	if _, err := c.Write([]byte{1}); err != nil { // mapped: go
		return
	}
	runtime.LockOSThread()
	if mode == 1 {
		shmProduce(c, s)
		return
	}
	var gone atomic.Bool
	go func() { // the client closing its socket ends the session
		c.Read(buf)
		gone.Store(true)
	}()
	for {
		if s.turn.wait(func(v uint32) bool { return v == 1 }, s.spin, &gone) != nil {
			return
		}
		n := s.length.Load()
		if n > shmMax {
			return
		}
		copy(s.resp()[:n], s.req()[:n])
		s.turn.store(2)
	}
}

// shmProduce serves window requests (count, size) from the socket into
// the stream ring until the client goes.
func shmProduce(c *net.UnixConn, s *shmSeg) {
	var gone atomic.Bool
	req := make([]byte, 8)
	var head uint32
	var body []byte
	for {
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		count, size := getU32(req), int(getU32(req[4:]))
		n, slot := slots(size)
		if n == 0 {
			return
		}
		if len(body) < size {
			body = make([]byte, size)
		}
		for range count {
			full := head - n
			if err := s.tail.wait(func(t uint32) bool { return t != full }, s.spin, &gone); err != nil {
				return
			}
			sl := s.slot(head%n, slot)
			putU32(sl, uint32(size))
			copy(sl[8:], body[:size])
			head++
			s.head.store(head)
		}
	}
}

// shmDial creates and maps a segment and hands it to the server in mode.
func shmDial(a *args, mode byte) (*shmSeg, *net.UnixConn, func(), error) {
	fd, err := unix.MemfdCreate("bench-shm", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, nil, err
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, shmSize); err != nil {
		return nil, nil, nil, err
	}
	s, err := mapSeg(fd)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: a.addr, Net: "unix"})
	if err != nil {
		unix.Munmap(s.mem)
		return nil, nil, nil, err
	}
	done := func() { c.Close(); unix.Munmap(s.mem) }
	if _, _, err := c.WriteMsgUnix([]byte{mode}, unix.UnixRights(fd), nil); err != nil {
		done()
		return nil, nil, nil, err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		done()
		return nil, nil, nil, fmt.Errorf("server did not map the segment: %w", err)
	}
	return s, c, done, nil
}

func shmRPC(ctx context.Context, a *args) (*result, error) {
	if a.size > shmMax {
		return nil, fmt.Errorf("payload over %d bytes", shmMax)
	}
	s, _, done, err := shmDial(a, 0)
	if err != nil {
		return nil, err
	}
	defer done()
	var gone atomic.Bool
	go func() { <-ctx.Done(); gone.Store(true) }()
	runtime.LockOSThread()
	out := make([]byte, a.size)
	return rpcLoop(ctx, a, func(_ context.Context, p []byte) error {
		copy(s.req(), p)
		s.length.Store(uint32(len(p)))
		s.turn.store(1)
		if err := s.turn.wait(func(v uint32) bool { return v == 2 }, s.spin, &gone); err != nil {
			return err
		}
		copy(out, s.resp()[:len(p)])
		s.turn.v.Store(0)
		return nil
	})
}

func shmEvents(ctx context.Context, a *args) (*result, error) {
	n, slot := slots(a.size)
	if n < 2 {
		return nil, fmt.Errorf("payload of %d bytes does not fit the ring twice", a.size)
	}
	s, c, done, err := shmDial(a, 1)
	if err != nil {
		return nil, err
	}
	defer done()
	req := make([]byte, 8)
	putU32(req, uint32(a.window))
	putU32(req[4:], uint32(a.size))
	out := make([]byte, a.size)
	var tail uint32
	var late atomic.Bool // set at the deadline: stop waiting
	runtime.LockOSThread()
	return receiveWindows(ctx, a, func() error { _, err := c.Write(req); return err },
		func(deadline time.Time) (int, error) {
			t := time.AfterFunc(time.Until(deadline), func() { late.Store(true) })
			defer t.Stop()
			if err := s.head.wait(func(h uint32) bool { return h != tail }, s.spin, &late); err != nil {
				return 0, errTimeout
			}
			sl := s.slot(tail%n, slot)
			size := int(getU32(sl))
			if size > len(sl)-8 {
				return 0, fmt.Errorf("slot length %d over %d", size, len(sl)-8)
			}
			copy(out, sl[8:8+size])
			tail++
			s.tail.store(tail)
			return size, nil
		})
}
