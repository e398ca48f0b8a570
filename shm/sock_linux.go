package shm

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// MaxFds is the most descriptors RecvFds accepts in one message.
const MaxFds = 16

// Cred is a peer's identity as the kernel recorded it when the socket was
// connected (SO_PEERCRED), not as the peer claims it.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerCred returns the credentials of the process at the other end of c.
func PeerCred(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, &OpError{Op: "SO_PEERCRED", Err: err}
	}
	var uc *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, &OpError{Op: "SO_PEERCRED", Err: err}
	}
	if serr != nil {
		return Cred{}, &OpError{Op: "SO_PEERCRED", Err: serr}
	}
	return Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

// SendFds sends msg (at least one byte) with fds attached (SCM_RIGHTS). The
// caller keeps its own copies of fds.
func SendFds(c *net.UnixConn, msg []byte, fds ...int) error {
	_, err := SendFdsN(c, msg, fds...)
	return err
}

// SendFdsN is SendFds that also reports how many bytes of msg were
// written (some, with an error, after a write deadline).
func SendFdsN(c *net.UnixConn, msg []byte, fds ...int) (int, error) {
	if len(msg) == 0 {
		return 0, errors.New("shm: SendFds needs at least one byte of message")
	}
	if len(fds) > MaxFds {
		return 0, fmt.Errorf("shm: %d fds exceed the limit of %d", len(fds), MaxFds)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(msg, oob, nil)
	if err != nil {
		return n, &OpError{Op: "sendmsg", Err: err}
	}
	if n != len(msg) || oobn != len(oob) {
		return n, &OpError{Op: "sendmsg", Err: io.ErrShortWrite}
	}
	return n, nil
}

// ErrTooManyFds is returned by RecvFds when the peer attached more
// descriptors than allowed or the control data was truncated; every
// descriptor that did arrive has been closed.
var ErrTooManyFds = errors.New("shm: too many file descriptors received")

// RecvFds reads one message into buf and returns its length and the
// descriptors attached to it (close-on-exec), at most maxFds (capped at
// MaxFds). On every error, including truncated control data, the
// descriptors that arrived are closed and none are returned. At end of
// stream it returns io.EOF.
func RecvFds(c *net.UnixConn, buf []byte, maxFds int) (int, []int, error) {
	if maxFds < 0 || maxFds > MaxFds {
		maxFds = MaxFds
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, nil, &OpError{Op: "recvmsg", Err: err}
	}
	// One extra slot, so that a message carrying more than maxFds shows as
	// such instead of as a bare truncation.
	oob := make([]byte, unix.CmsgSpace((maxFds+1)*4))
	var n, oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	var fds []int
	if oobn > 0 {
		fds = parseRights(oob[:oobn])
	}
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	switch {
	case err != nil:
		closeAll()
		return 0, nil, &OpError{Op: "recvmsg", Err: err}
	case flags&unix.MSG_CTRUNC != 0 || len(fds) > maxFds:
		closeAll()
		return 0, nil, ErrTooManyFds
	case n == 0 && len(fds) == 0 && len(buf) > 0:
		return 0, nil, io.EOF
	}
	return n, fds, nil
}

// parseRights returns every descriptor in the SCM_RIGHTS messages of oob.
func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		rights, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	return fds
}
