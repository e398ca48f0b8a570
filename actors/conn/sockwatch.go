package conn

import (
	"errors"
	"os"
	"sync"
	"syscall"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
)

// SocketWatcher reads the control sockets of many shared-memory
// connections on one goroutine, so that an idle connection costs no
// goroutine of its own for its socket (with the socket transport, whose
// requests come on the socket, each connection keeps its watch goroutine).
// It is an epoll instance of its own, which the netpoller watches: a
// socket with bytes to read (a Cancel, a ClientGoodbye, the end) is
// reported once (EPOLLONESHOT), read without blocking into a buffer from
// a shared pool, and armed again. A connection is known by a token, never
// by its descriptor, so that a report for a socket closed meanwhile (its
// number perhaps reused) finds nobody.
//
// Its owner (the node) closes it once every connection it watched is done;
// Close waits for its goroutine.
type SocketWatcher struct {
	ep   *os.File // the epoll instance, registered with the netpoller
	raw  syscall.RawConn
	mu   sync.Mutex
	byID map[uint64]*Endpoint // by token; under mu
	next uint64               // the last token given; under mu
	done chan struct{}
	once sync.Once
}

// watchBufSize holds the largest control frame.
const watchBufSize = 24 + pb.MaxControl + 8

// watchBufs are the watcher's read buffers: one at a time, taken to read.
var watchBufs = sync.Pool{New: func() any { b := make([]byte, watchBufSize); return &b }}

// NewSocketWatcher starts a watcher.
func NewSocketWatcher() (*SocketWatcher, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(fd), "socket-watcher")
	raw, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, err
	}
	w := &SocketWatcher{ep: ep, raw: raw, byID: map[uint64]*Endpoint{}, done: make(chan struct{})}
	go w.run()
	return w, nil
}

// Close stops the watcher and waits for its goroutine. It is idempotent.
func (w *SocketWatcher) Close() {
	w.once.Do(func() { w.ep.Close() })
	<-w.done
}

// add starts watching c's socket. On error c is not watched.
func (w *SocketWatcher) add(c *Endpoint) error {
	sc, err := c.cfg.Sock.SyscallConn()
	if err != nil {
		return err
	}
	c.sockRaw = sc // before the table, through whose lock the watcher sees c
	w.mu.Lock()
	w.next++
	tok := w.next
	w.byID[tok] = c
	c.watchTok = tok
	w.mu.Unlock()
	var cerr error
	err = sc.Control(func(fd uintptr) {
		cerr = w.ctl(unix.EPOLL_CTL_ADD, int(fd), tok)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		w.mu.Lock()
		delete(w.byID, tok)
		w.mu.Unlock()
		c.sockRaw = nil
		return err
	}
	return nil
}

// forget stops watching c, and reports whether it was watched (whoever
// takes c out of the table ends its watch).
func (w *SocketWatcher) forget(c *Endpoint) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID[c.watchTok] != c {
		return false
	}
	delete(w.byID, c.watchTok)
	c.sockRaw.Control(func(fd uintptr) { w.ctl(unix.EPOLL_CTL_DEL, int(fd), 0) })
	return true
}

func (w *SocketWatcher) ctl(op, fd int, tok uint64) error {
	var err error
	werr := w.raw.Control(func(ep uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
		err = unix.EpollCtl(int(ep), op, fd, &ev)
	})
	if werr != nil {
		return werr
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

func (w *SocketWatcher) run() {
	defer close(w.done)
	var evs [64]unix.EpollEvent
	for {
		n := 0
		err := w.raw.Read(func(ep uintptr) bool {
			var err error
			n, err = unix.EpollWait(int(ep), evs[:], 0)
			if err != nil {
				n = 0
			}
			return n > 0 // else wait for the epoll instance to be readable
		})
		if err != nil {
			return // closed
		}
		for i := range evs[:n] {
			tok := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			w.mu.Lock()
			c := w.byID[tok]
			w.mu.Unlock()
			if c == nil {
				continue // forgotten meanwhile
			}
			if c.readControl() {
				if w.forget(c) {
					c.partDone()
				}
				continue
			}
			w.mu.Lock()
			if w.byID[tok] == c { // else forgotten meanwhile
				c.sockRaw.Control(func(fd uintptr) { w.ctl(unix.EPOLL_CTL_MOD, int(fd), tok) })
			}
			w.mu.Unlock()
		}
	}
}

// readControl reads what the socket holds without blocking and handles
// its control frames, as watch does; a frame read in part waits in
// c.partial for the rest. It reports whether the socket is done with: its
// end, a broken frame, or the socket closed.
func (c *Endpoint) readControl() (ended bool) {
	bp := watchBufs.Get().(*[]byte)
	defer watchBufs.Put(bp)
	buf := *bp
	have := copy(buf, c.partial)
	c.partial = nil
	var n int
	var rerr error
	err := c.sockRaw.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf[have:])
		return true // one try: the watcher waits, not this goroutine
	})
	switch {
	case err != nil: // the socket is closed: the connection is being released
		return true
	case rerr == unix.EAGAIN || rerr == unix.EINTR:
		c.partial = append([]byte(nil), buf[:have]...)
		return false
	case rerr != nil || n == 0: // the end, between frames or inside one
		c.sockEnded()
		return true
	}
	b := buf[:have+n]
	for len(b) > 0 {
		f, size, err := shm.DecodeFrame(b, pb.MaxControl)
		if errors.Is(err, shm.ErrIncomplete) {
			break
		}
		if err != nil || f.Kind != pb.KindControl {
			c.end(Reason{Code: pb.Code_CODE_PROTOCOL_VIOLATION, Text: "bad frame on the socket"})
			return true
		}
		c.controlFrame(f)
		b = b[size:]
	}
	if len(b) > 0 {
		c.partial = append([]byte(nil), b...)
	}
	return false
}
