package switchboard

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"syscall"
	"time"

	gproto "google.golang.org/protobuf/proto"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
)

// WithMaxRing sets the largest ring, in bytes, a client may ask for (a
// power of two; default 4 MiB): larger requests are clamped to it, and the
// client's Welcome says the sizes it got (libqb's enforce_buffer_size). It
// bounds the memory one connection makes the node map. The node's own
// default sizes (WithRings) may be larger: they are not requests.
func WithMaxRing(n int) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if n < shm.MinRingCapacity || n > shm.MaxRingCapacity || bits.OnesCount(uint(n)) != 1 {
			return fmt.Errorf("switchboard: max ring %d is not a power of two in [%d, %d]", n, shm.MinRingCapacity, shm.MaxRingCapacity)
		}
		o.maxRing = n
		return nil
	})
}

// WithUIDLimits bounds, for each uid but root and the node's own, the
// connections the node holds (default 1024) and the handshakes it has in
// progress (default 64); 0 is no limit. Past them a client is refused with
// ErrLimitExceeded, so that one uid's flood of connections cannot keep
// others out.
func WithUIDLimits(conns, handshakes int) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if conns < 0 || handshakes < 0 {
			return errors.New("switchboard: negative uid limit")
		}
		o.uidConns, o.uidHandshakes = conns, handshakes
		return nil
	})
}

// WithPrivilegedLimits is WithUIDLimits for root and the node's own uid
// (default: no limit).
func WithPrivilegedLimits(conns, handshakes int) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if conns < 0 || handshakes < 0 {
			return errors.New("switchboard: negative uid limit")
		}
		o.privConns, o.privHandshakes = conns, handshakes
		return nil
	})
}

// limits returns the connection and handshake limits for uid.
func (o *nodeOptions) limits(uid uint32) (conns, handshakes int) {
	if uid == 0 || uid == uint32(os.Geteuid()) {
		return o.privConns, o.privHandshakes
	}
	return o.uidConns, o.uidHandshakes
}

// handshakeDone forgets a handshake that ended. The caller holds n.mu.
func (n *Node) handshakeDone(c *net.UnixConn) {
	uid, ok := n.hs[c]
	if !ok {
		return
	}
	delete(n.hs, c)
	if n.hsByUID[uid]--; n.hsByUID[uid] <= 0 {
		delete(n.hsByUID, uid)
	}
}

// uncount gives back a connection of uid. The caller holds n.mu.
func (n *Node) uncount(uid uint32) {
	if n.connsByUID[uid]--; n.connsByUID[uid] <= 0 {
		delete(n.connsByUID, uid)
	}
}

// refuseConnect refuses a connecting client: counted (HandshakesRefused,
// and a refusal of connect, logged), told why in a Refused frame with a
// short write (the accept loop does not wait on a client that does not
// read), its socket closed.
func (n *Node) refuseConnect(c *net.UnixConn, cred Cred, code pb.Code, why error) {
	n.refused.Add(1)
	n.refuse(cred, ActionConnect, "", why)
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	pb.WriteControl(c, &pb.Control{Msg: &pb.Control_Refused{Refused: &pb.Refused{Code: code, Reason: why.Error()}}}, nil)
	c.Close()
}

// errNoFds is the reason a node out of descriptors gives a client.
var errNoFds = errors.New("node out of file descriptors: try again later")

// outOfFds reports whether err says the process or the system ran out of
// descriptors.
func outOfFds(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// refuseOutOfFds, when accept fails for want of descriptors, gives up the
// spare descriptor to accept the waiting client, tells it why it is
// refused, and takes the spare back: a client learns the reason instead of
// waiting. It returns the new spare (-1 if it could not be had).
//
// The close, the accept and the new spare happen under n.fdMu, which the
// link pool holds while it makes a link (LinkPool.Guard): otherwise a link
// made meanwhile, in the background or by a handshake, could take the
// freed slot, the accept would fail again and the spare be lost, and every
// later client would wait instead of being told. The accept never waits
// under the lock: Linux fails accept with EMFILE before it looks for a
// client, so often nobody is there.
func (n *Node) refuseOutOfFds(ln *net.UnixListener, spare int) int {
	n.fdExhausted.Add(1)
	n.fdMu.Lock()
	client := -1
	if spare >= 0 {
		unix.Close(spare)
		// A plain accept4 on the non-blocking listener: EAGAIN when
		// nobody waits.
		if rc, err := ln.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if c, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK); err == nil {
					client = c
				}
			})
		}
	}
	if client >= 0 {
		n.refuseRaw(client) // closes it: its slot is the new spare's
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	n.fdMu.Unlock()
	if err != nil {
		return -1
	}
	return fd
}

// refuseRaw is refuseConnect for a socket accepted outside the netpoller
// (refuseOutOfFds, under fdMu): counted and logged, the Refused frame
// written once without waiting (a new socket's send buffer always takes
// it), the socket closed.
func (n *Node) refuseRaw(fd int) {
	defer unix.Close(fd)
	var cred Cred
	if uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
		cred = Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}
	}
	n.refused.Add(1)
	n.refuse(cred, ActionConnect, "", errNoFds)
	body, err := gproto.Marshal(&pb.Control{Msg: &pb.Control_Refused{Refused: &pb.Refused{Code: pb.Code_CODE_REFUSED, Reason: errNoFds.Error()}}})
	if err != nil {
		return
	}
	unix.Write(fd, shm.AppendFrame(nil, shm.Header{Kind: pb.KindControl}, body))
}
