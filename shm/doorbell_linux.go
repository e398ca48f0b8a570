package shm

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Doorbell is an eventfd used as a wake-up between processes. Waiting on it
// parks the goroutine in Go's netpoller, so an idle doorbell holds no OS
// thread. One goroutine at a time may Wait; any number may Ring.
type Doorbell struct {
	f   *os.File // nil for a ringer
	rc  syscall.RawConn
	fd  int
	buf [8]byte

	rmu       sync.RWMutex // a ringer's Ring holds it shared, Close exclusively
	closeOnce sync.Once

	mu       sync.Mutex // orders a cancellation's deadline against the end of Wait
	waitDone bool
	closed   atomic.Bool
	rescued  atomic.Uint64

	// The waiter's condition and the netpoller callbacks, built once so
	// that a wait allocates nothing.
	cond            func() bool
	drainFn, condFn func(fd uintptr) bool
	looks           int // condFn's calls in the current wait

	kickable atomic.Bool // a Parker sleeping here was listed for harvesting: kicks may come
	kicked   atomic.Bool // a harvest sweep set the read deadline in the past (kick)
}

var one = [8]byte{1} // little-endian 1 for eventfd writes

// NewDoorbell creates an eventfd doorbell.
func NewDoorbell() (*Doorbell, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, &OpError{Op: "eventfd", Err: err}
	}
	return newDoorbell(fd)
}

func newDoorbell(fd int) (*Doorbell, error) {
	f := os.NewFile(uintptr(fd), "doorbell")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, &OpError{Op: "eventfd", Err: err}
	}
	d := &Doorbell{f: f, rc: rc, fd: fd}
	d.drainFn = func(fd uintptr) bool {
		_, err := unix.Read(int(fd), d.buf[:])
		return err != unix.EAGAIN
	}
	d.condFn = func(uintptr) bool {
		d.looks++
		if d.looks > 1 {
			waitCounts.woken.Add(1)
		}
		return d.cond()
	}
	return d, nil
}

// RingerFromFd wraps an eventfd that this process only rings, never waits
// on; it is not registered with the netpoller. It takes ownership of fd.
func RingerFromFd(fd int) (*Doorbell, error) {
	unix.CloseOnExec(fd)
	return ringerFromFd(fd)
}

// ringerFromFd is RingerFromFd for a descriptor already close-on-exec.
func ringerFromFd(fd int) (*Doorbell, error) {
	if err := checkEventfd(fd); err != nil {
		return nil, err
	}
	return &Doorbell{fd: fd}, nil
}

// checkEventfd closes fd unless it is an eventfd. Its link in /proc is
// the one proof (fstat shows the anonymous inode that timerfds, epoll
// descriptors and others share); read into a buffer on the stack, it
// costs one system call and no allocation.
func checkEventfd(fd int) error {
	const want = "anon_inode:[eventfd]"
	var path [32]byte
	var buf [len(want) + 1]byte // one more: a longer name does not match
	p := strconv.AppendInt(append(path[:0], "/proc/self/fd/"...), int64(fd), 10)
	n, err := unix.Readlink(string(p), buf[:])
	if err != nil || string(buf[:n]) != want {
		unix.Close(fd)
		if err == nil {
			err = errors.New(string(buf[:n]))
		}
		return &OpError{Op: "doorbell: not an eventfd", Err: err}
	}
	return nil
}

// DoorbellFromFd wraps an eventfd received from another process. It takes
// ownership of fd, closing it if it is not an eventfd.
func DoorbellFromFd(fd int) (*Doorbell, error) {
	unix.CloseOnExec(fd)
	return doorbellFromFd(fd)
}

// doorbellFromFd is DoorbellFromFd for a descriptor already close-on-exec.
// The sender made it non-blocking, normally (the flag belongs to the open
// file, which travels with it): it is set here only if not.
func doorbellFromFd(fd int) (*Doorbell, error) {
	if err := checkEventfd(fd); err != nil {
		return nil, err
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil && fl&unix.O_NONBLOCK == 0 {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: "doorbell: set nonblock", Err: err}
	}
	return newDoorbell(fd)
}

// Fd returns the eventfd, for passing to another process. It is valid until
// Close.
func (d *Doorbell) Fd() int { return d.fd }

// Ring wakes the waiter, or the next one if nobody waits now.
func (d *Doorbell) Ring() error {
	waitCounts.rings.Add(1)
	if d.f == nil {
		d.rmu.RLock()
		defer d.rmu.RUnlock()
		if d.closed.Load() {
			return ErrClosed
		}
		if _, err := unix.Write(d.fd, one[:]); err != nil {
			return &OpError{Op: "eventfd write", Err: err}
		}
		return nil
	}
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
// Wait), ctx ends, or the doorbell is closed (ErrClosed). A ring that the
// kernel fails to deliver (see WaitUntil) is not re-checked here: protocols
// with shared state should use WaitUntil.
func (d *Doorbell) Wait(ctx context.Context) error {
	return d.wait(ctx, d.drainFn, 0)
}

// WaitUntil blocks until cond reports true, ctx ends, or the doorbell is
// closed (ErrClosed). cond is called once before parking and again after
// each ring; it must not block. Rings are not consumed: the eventfd counter
// only grows (it would take centuries of rings to saturate it), and epoll
// reports every write as a new edge, so a wait costs no read(2).
//
// The caller's protocol makes this safe: it publishes "I am going to sleep"
// before calling, and the peer publishes its data before it rings. A ring
// whose edge was reported before this wait started is then always matched
// by data that cond already sees.
//
// A parked wait also re-checks cond on its own, 1ms after parking and then
// at doubling intervals up to a second. On the Firecracker guest kernel
// these machines run (6.18), a wake-up is occasionally never delivered
// (about one in 20,000 parks under ping-pong with two busy CPUs: the write
// to the eventfd completes after the waiter entered epoll_wait, and the
// waiter sleeps on; the same happens with a bare epoll_wait outside Go's
// netpoller). The re-check bounds such a loss to a delay; Rescued counts
// them.
//
// Under load, most rescues are not losses but rings seen late: the
// eventfd's count had grown during 1177 of 1178 rescued waits counted in a
// node serving eight callers. Go looks at the netpoller only when a P runs
// out of goroutines (or from sysmon, every 10 ms), while it checks timers
// at every switch; a busy process thus sees the re-check before the ring.
// A Parker's first sleeps are therefore listed for harvesting (harvest.go):
// the next goroutine of the process about to wait wakes it.
func (d *Doorbell) WaitUntil(ctx context.Context, cond func() bool) error {
	return d.waitUntil(ctx, cond, nil)
}

// waitUntil is WaitUntil for p, if not nil, which it lists for harvesting
// (harvest.go) during its first sleeps: a sweep may then end a sleep
// early, through the read deadline.
func (d *Doorbell) waitUntil(ctx context.Context, cond func() bool, p *Parker) error {
	d.cond = cond
	defer func() { d.cond = nil }()
	waitCounts.waits.Add(1)
	for recheck := firstRecheck; ; recheck = min(2*recheck, maxRecheck) {
		d.looks = 0
		listed := p != nil && recheck <= harvestInterval
		if listed {
			harvestAdd(p)
		}
		err := d.wait(ctx, d.condFn, recheck)
		if listed {
			harvestRemove(p) // after which no kick comes
		}
		kicked := d.kicked.Swap(false)
		if d.looks > 1 || (d.looks == 1 && err != nil) {
			waitCounts.sleeps.Add(1)
		}
		if kicked && err == errRecheck {
			waitCounts.harvested.Add(1)
			if cond() {
				return nil
			}
			continue
		}
		if err != errRecheck {
			return err
		}
		waitCounts.rechecks.Add(1)
		if cond() {
			d.rescued.Add(1)
			waitCounts.rescued.Add(1)
			return nil
		}
	}
}

const (
	firstRecheck = time.Millisecond
	maxRecheck   = time.Second
)

// errRecheck reports that a wait's own re-check deadline passed.
var errRecheck = errors.New("shm: recheck")

// Rescued returns how many WaitUntil calls found their condition true at a
// re-check, without the ring that should have woken them.
func (d *Doorbell) Rescued() uint64 { return d.rescued.Load() }

// wait runs the netpoller loop of RawConn.Read around done, with ctx's
// deadline and cancellation, and the re-check interval if not zero, mapped
// onto the file's read deadline.
func (d *Doorbell) wait(ctx context.Context, done func(fd uintptr) bool, recheck time.Duration) error {
	if d.f == nil {
		return errors.New("shm: waiting on a ring-only doorbell")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, _ := ctx.Deadline()
	own := false
	if recheck > 0 {
		if r := time.Now().Add(recheck); deadline.IsZero() || r.Before(deadline) {
			deadline, own = r, true
		}
	}
	if !deadline.IsZero() {
		d.f.SetReadDeadline(deadline)
		defer d.f.SetReadDeadline(time.Time{})
	} else if d.kickable.Load() {
		d.f.SetReadDeadline(time.Time{}) // a late kick's (harvest.go)
	}
	if ctx.Done() != nil {
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
		}()
	}
	err := d.rc.Read(done)
	switch {
	case err == nil:
		return nil
	case d.closed.Load() || errors.Is(err, os.ErrClosed):
		return ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		if err := ctx.Err(); err != nil {
			return err
		}
		if own {
			return errRecheck
		}
		return context.DeadlineExceeded
	default:
		return &OpError{Op: "eventfd wait", Err: err}
	}
}

// Close closes the eventfd. A Wait in progress returns ErrClosed. Close is
// idempotent.
func (d *Doorbell) Close() error {
	d.closed.Store(true)
	if d.kickable.Load() {
		harvestForget(d) // before the rings it guards are unmapped
	}
	if d.f == nil {
		d.closeOnce.Do(func() {
			d.rmu.Lock()
			unix.Close(d.fd)
			d.rmu.Unlock()
		})
		return nil
	}
	if err := d.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
