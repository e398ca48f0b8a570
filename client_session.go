package switchboard

import (
	"net"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// A session is one handshake's worth of a Conn's transport: the node's
// socket, the rings and the Welcome. A Conn has one at a time; with
// WithReconnect, each reconnection puts a new one in place of the old one
// (install, client_reconnect.go), in the Conn's own fields, so that the
// paths that use them (Call's above all) pay nothing for it.
type session struct {
	sock    *net.UnixConn
	link    *shm.Link
	bridge  *shm.Link // socket transport: the socket's side of the local rings
	welcome *pb.Welcome
	spin    time.Duration
}

// close releases a session that was never put in use.
func (s *session) close() {
	s.sock.Close()
	s.link.Close()
	if s.bridge != nil {
		s.bridge.Close()
	}
}

// useSession puts s's transport in the Conn's fields. The caller is
// handshake, before any goroutine of the Conn starts, or install, which
// holds every lock that guards them, after the old session's goroutines
// ended.
func (c *Conn) useSession(s *session) {
	c.sock, c.link, c.bridge = s.sock, s.link, s.bridge
	c.welcome.Store(s.welcome)
	c.req, c.resp, c.ev = s.link.Producer(pb.RingRequest), s.link.Consumer(pb.RingResponse), s.link.Consumer(pb.RingEvent)
	bell := s.link.Bell(pb.BellClient)
	c.bell.Store(bell)
	c.parker, c.parkConds = shm.NewParker(bell), []shm.Cond{c.resp, c.ev}
	maxMsg := int(s.welcome.GetMaxMessageBytes())
	c.replies = pb.Reassembly{MaxInFlight: 64, MaxSize: maxMsg}
	c.evChunks = pb.Reassembly{MaxInFlight: 1, MaxSize: maxMsg + pb.MaxMsgOverhead}
	c.rc.sessDone = make(chan struct{})
}

// startSession starts the session's goroutines: the pump, watch, and
// for the socket transport sendFrames. They belong to the Conn's wg, which
// Close waits for, and to rc.sess, which the reconnection waits for
// before it puts a new session in place.
func (c *Conn) startSession() {
	run := func(f func()) {
		c.rc.sess.Add(1)
		c.wg.Go(func() {
			defer c.rc.sess.Done()
			f()
		})
	}
	run(c.pump)
	run(c.watch)
	if c.bridge != nil {
		run(c.sendFrames)
	}
}

// endSession marks the session's end for its goroutines (sendFrames waits
// for it). The caller holds pmu.
func (c *Conn) endSession() {
	select {
	case <-c.rc.sessDone:
	default:
		close(c.rc.sessDone)
	}
}
