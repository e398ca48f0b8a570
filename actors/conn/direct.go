package conn

import (
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// ControlWait bounds SendControl's write: a client that does not read its
// socket must not hold up the goroutine that writes to it (the caller's
// pump, for a direct channel's descriptors).
const ControlWait = 50 * time.Millisecond

// SendControl writes a control frame on the connection's socket, with
// descriptors attached (a direct peer channel's). Any goroutine may call
// it; it holds the socket's lock for the one write, which gives up after
// ControlWait. A frame written only in part would leave the client's
// stream out of step: the connection is ended then (the client was not
// reading its socket), and the error returned.
func (c *Endpoint) SendControl(m *pb.Control, fds []int) error {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	// Not cleared after: every other write to a shared-memory client's
	// socket (sayGoodbye) sets its own deadline.
	c.cfg.Sock.SetWriteDeadline(time.Now().Add(ControlWait))
	n, err := pb.WriteControlN(c.cfg.Sock, m, fds)
	if err != nil && n > 0 {
		c.end(Reason{Code: pb.Code_CODE_SLOW_CONSUMER, Text: "control frame written in part: the client does not read its socket"})
	}
	return err
}

// DirectPeers reports whether the client was granted FEATURE_DIRECT_PEERS.
func (c *Endpoint) DirectPeers() bool { return c.cfg.DirectPeers }

// Saturated reports whether the connection's mailbox holds as many events
// as it may: an event delivered now would be dropped.
func (c *Endpoint) Saturated() bool { return c.saturated() }
