package conn

import pb "github.com/switchboard-ipc/switchboard/proto"

// SendControl writes a control frame on the connection's socket, with
// descriptors attached (a direct peer channel's). Any goroutine may call
// it; it holds the socket's lock for the one write.
func (c *Endpoint) SendControl(m *pb.Control, fds []int) error {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	return pb.WriteControl(c.cfg.Sock, m, fds)
}

// DirectPeers reports whether the client was granted FEATURE_DIRECT_PEERS.
func (c *Endpoint) DirectPeers() bool { return c.cfg.DirectPeers }

// Saturated reports whether the connection's mailbox holds as many events
// as it may: an event delivered now would be dropped.
func (c *Endpoint) Saturated() bool { return c.saturated() }
