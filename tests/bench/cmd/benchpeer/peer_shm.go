package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The bare shared-memory ping-pong: the physical reference, with nothing
// of an IPC system but the memory and the wake-up. The client creates a
// memfd, maps it, and passes it to the server over a Unix socket. Layout:
//
//	offset 0:  turn     uint32: 1 a request is ready, 2 a response is ready
//	offset 4:  sleepers uint32: waiters parked (or about to park) on turn
//	offset 8:  length   uint32: the payload's length
//	offset 64:            the request payload (up to shmMax bytes)
//	offset 64 + shmMax:   the response payload
//
// A waiter spins up to 20 µs when its process has more than one CPU, then
// parks on a futex on turn (FUTEX_WAIT on the shared word); the writer
// wakes it only when sleepers is non-zero. The server copies the request
// into the response area: the one copy every other peer makes too.

const (
	shmMax  = 1 << 20
	shmSize = 64 + 2*shmMax
	shmSpin = 20 * time.Microsecond

	futexWait = 0 // FUTEX_WAIT, linux/futex.h
	futexWake = 1 // FUTEX_WAKE
)

func init() {
	register("shm", map[string]roleFunc{
		"serve": shmServe,
		"rpc":   shmRPC,
	})
}

// shmSeg is one mapped ping-pong segment.
type shmSeg struct {
	mem      []byte
	turn     *atomic.Uint32
	sleepers *atomic.Uint32
	length   *atomic.Uint32
	spin     bool
}

func mapSeg(fd int) (*shmSeg, error) {
	mem, err := unix.Mmap(fd, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &shmSeg{
		mem: mem,
		// The three words sit at the 8-aligned start of a page-aligned
		// mapping; they are only ever accessed atomically.
		turn:     (*atomic.Uint32)(unsafe.Pointer(&mem[0])),
		sleepers: (*atomic.Uint32)(unsafe.Pointer(&mem[4])),
		length:   (*atomic.Uint32)(unsafe.Pointer(&mem[8])),
		spin:     runtime.GOMAXPROCS(0) > 1,
	}, nil
}

func (s *shmSeg) req() []byte  { return s.mem[64 : 64+shmMax] }
func (s *shmSeg) resp() []byte { return s.mem[64+shmMax:] }

// wait waits until turn is want, or until stop is set (checked every
// 100 ms while parked).
func (s *shmSeg) wait(want uint32, stop *atomic.Bool) error {
	if s.spin {
		start := time.Now()
		for i := 0; ; i++ {
			if s.turn.Load() == want {
				return nil
			}
			if i&63 == 63 && time.Since(start) > shmSpin {
				break
			}
		}
	}
	s.sleepers.Add(1)
	defer s.sleepers.Add(^uint32(0))
	ts := unix.NsecToTimespec(int64(100 * time.Millisecond))
	for {
		cur := s.turn.Load()
		if cur == want {
			return nil
		}
		if stop != nil && stop.Load() {
			return errors.New("peer gone")
		}
		// FUTEX_WAIT (not _PRIVATE: the word is shared between processes)
		// returns at once if turn is no longer cur.
		unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(s.turn)), futexWait, uintptr(cur),
			uintptr(unsafe.Pointer(&ts)), 0, 0)
	}
}

// set publishes turn and wakes a parked peer.
func (s *shmSeg) set(v uint32) {
	s.turn.Store(v)
	if s.sleepers.Load() != 0 {
		unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(s.turn)), futexWake, 1, 0, 0, 0)
	}
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
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
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
	var gone atomic.Bool
	go func() { // the client closing its socket ends the session
		c.Read(buf)
		gone.Store(true)
	}()
	c.Write([]byte{1}) // mapped: go
	runtime.LockOSThread()
	for {
		if s.wait(1, &gone) != nil {
			return
		}
		n := s.length.Load()
		if n > shmMax {
			return
		}
		copy(s.resp()[:n], s.req()[:n])
		s.set(2)
	}
}

func shmRPC(ctx context.Context, a *args) (*result, error) {
	if a.size > shmMax {
		return nil, fmt.Errorf("payload over %d bytes", shmMax)
	}
	fd, err := unix.MemfdCreate("bench-pingpong", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, shmSize); err != nil {
		return nil, err
	}
	s, err := mapSeg(fd)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(s.mem)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: a.addr, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, _, err := c.WriteMsgUnix([]byte{0}, unix.UnixRights(fd), nil); err != nil {
		return nil, err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return nil, fmt.Errorf("server did not map the segment: %w", err)
	}
	var gone atomic.Bool
	go func() { <-ctx.Done(); gone.Store(true) }()
	runtime.LockOSThread()
	out := make([]byte, a.size)
	return rpcLoop(ctx, a, func(_ context.Context, p []byte) error {
		copy(s.req(), p)
		s.length.Store(uint32(len(p)))
		s.set(1)
		if err := s.wait(2, &gone); err != nil {
			return err
		}
		copy(out, s.resp()[:len(p)])
		s.turn.Store(0)
		return nil
	})
}
