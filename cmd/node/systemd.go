package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// systemd integration, written against the documented protocols
// (sd_listen_fds(3), sd_notify(3)) without libsystemd.

// listenFDStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDStart = 3

// activationListener returns the Unix socket systemd passed to this
// process (socket activation), or nil if there is none. Like
// sd_listen_fds, it takes the sockets only when LISTEN_PID is this
// process (they were meant for another one otherwise), and it unsets
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES so no child inherits them.
// Switchboard serves one socket: a unit passing more is refused.
func activationListener() (*net.UnixListener, error) {
	fds, pid := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID")
	if fds == "" {
		return nil, nil
	}
	for _, v := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("systemd: LISTEN_FDS=%q is not a count", fds)
	}
	switch {
	case n == 0:
		return nil, nil
	case n > 1:
		for fd := listenFDStart; fd < listenFDStart+n; fd++ {
			unix.CloseOnExec(fd)
		}
		return nil, fmt.Errorf("systemd: passed %d sockets; the socket unit must have exactly one ListenStream", n)
	}
	unix.CloseOnExec(listenFDStart)
	f := os.NewFile(listenFDStart, "systemd-socket")
	defer f.Close() // net.FileListener duplicated it
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("systemd: the passed descriptor: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("systemd: the passed socket is a %s listener, not a Unix stream socket", ln.Addr().Network())
	}
	ul.SetUnlinkOnClose(false) // the socket file is systemd's
	return ul, nil
}

// notifier sends sd_notify messages to $NOTIFY_SOCKET; with no such
// socket, it does nothing. It is safe for concurrent use.
type notifier struct {
	mu   sync.Mutex
	conn *net.UnixConn
}

// newNotifier connects to $NOTIFY_SOCKET, a path or, when it starts with
// '@', an abstract socket (Go's net package maps '@' to the abstract
// namespace).
func newNotifier() (*notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &notifier{}, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return &notifier{}, fmt.Errorf("systemd: NOTIFY_SOCKET=%q is neither a path nor an abstract socket", path)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return &notifier{}, fmt.Errorf("systemd: notify socket: %w", err)
	}
	return &notifier{conn: c}, nil
}

// notify sends the state lines ("READY=1", "STATUS=serving") as one datagram.
func (s *notifier) notify(lines ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	_, err := s.conn.Write([]byte(strings.Join(lines, "\n") + "\n"))
	return err
}

// enabled reports whether there is a socket to notify.
func (s *notifier) enabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// reloading is the message systemd expects when a reload starts
// (Type=notify-reload wants MONOTONIC_USEC with it).
func reloading() []string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return []string{"RELOADING=1"}
	}
	return []string{"RELOADING=1", "MONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)}
}

func (s *notifier) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
