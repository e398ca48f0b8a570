package conn

import "time"

// announceWait bounds how long a connection's first request waits for
// the registry to announce the connection (Config.Announced): the
// registry's actor answers in microseconds unless the node is stuck.
const announceWait = 2 * time.Second

// awaitAnnounced reports whether the pump may serve requests: once the
// registry has announced the connection (its "connected" notice is on its
// way to every observer), which the handshake no longer waits for. The
// pump waits here only if a request came before the announcement, rarely:
// the client's first request follows its handshake's reply. Pump-only.
func (c *Endpoint) awaitAnnounced() bool {
	if c.announced || c.cfg.Announced == nil {
		return true
	}
	if !c.in.Ready() {
		return false // nothing to serve yet: no need to wait
	}
	select {
	case <-c.cfg.Announced:
	default:
		t := time.NewTimer(announceWait)
		select {
		case <-c.cfg.Announced:
		case <-c.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
			c.cfg.Logger.Warn("registry did not announce the connection in time; serving it anyway")
		}
		t.Stop()
	}
	c.announced = true
	return true
}
