package shm

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Doorbell is an eventfd used as a wake-up between processes. Waiting on it
// parks the goroutine in Go's netpoller, so an idle doorbell holds no OS
// thread. One goroutine at a time may Wait; any number may Ring.
type Doorbell struct {
	f   *os.File
	fd  int
	buf [8]byte

	mu       sync.Mutex // orders a cancellation's deadline against the end of Wait
	waitDone bool
}

var one = [8]byte{1} // little-endian 1 for eventfd writes

// NewDoorbell creates an eventfd doorbell.
func NewDoorbell() (*Doorbell, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, &OpError{Op: "eventfd", Err: err}
	}
	return &Doorbell{f: os.NewFile(uintptr(fd), "doorbell"), fd: fd}, nil
}

// DoorbellFromFd wraps an eventfd received from another process. It takes
// ownership of fd, closing it if it is not an eventfd.
func DoorbellFromFd(fd int) (*Doorbell, error) {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || link != "anon_inode:[eventfd]" {
		unix.Close(fd)
		if err == nil {
			err = errors.New(link)
		}
		return nil, &OpError{Op: "doorbell: not an eventfd", Err: err}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: "doorbell: set nonblock", Err: err}
	}
	unix.CloseOnExec(fd)
	return &Doorbell{f: os.NewFile(uintptr(fd), "doorbell"), fd: fd}, nil
}

// Fd returns the eventfd, for passing to another process. It is valid until
// Close.
func (d *Doorbell) Fd() int { return d.fd }

// Ring wakes the waiter, or the next one if nobody waits now.
func (d *Doorbell) Ring() error {
	if _, err := d.f.Write(one[:]); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return ErrClosed
		}
		return &OpError{Op: "eventfd write", Err: err}
	}
	return nil
}

var longAgo = time.Unix(1, 0)

// Wait blocks until the doorbell rings (consuming every ring since the last
// Wait), ctx ends, or the doorbell is closed (ErrClosed).
func (d *Doorbell) Wait(ctx context.Context) error {
	if done := ctx.Done(); done != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dl, ok := ctx.Deadline(); ok {
			d.f.SetReadDeadline(dl)
		}
		d.mu.Lock()
		d.waitDone = false
		d.mu.Unlock()
		stop := context.AfterFunc(ctx, func() {
			d.mu.Lock()
			if !d.waitDone {
				d.f.SetReadDeadline(longAgo)
			}
			d.mu.Unlock()
		})
		defer func() {
			if !stop() {
				d.mu.Lock()
				d.waitDone = true
				d.mu.Unlock()
			}
			d.f.SetReadDeadline(time.Time{})
		}()
	}
	_, err := d.f.Read(d.buf[:])
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		if err := ctx.Err(); err != nil {
			return err
		}
		return context.DeadlineExceeded
	case errors.Is(err, os.ErrClosed):
		return ErrClosed
	default:
		return &OpError{Op: "eventfd read", Err: err}
	}
}

// Close closes the eventfd. A Wait in progress returns ErrClosed. Close is
// idempotent.
func (d *Doorbell) Close() error {
	if err := d.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
