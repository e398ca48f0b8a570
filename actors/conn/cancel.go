package conn

import (
	"context"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// maxCanceled bounds the ids remembered from Cancel frames that came
// before their calls were read: past it, the set starts again empty.
const maxCanceled = 4096

// cancelFrame handles the client's Cancel for call id (watch calls it):
// a node-service call being served has its context cancelled; any other
// id is remembered, so that a call or a request to peers read after its
// Cancel is not run (startCancelable, takeCanceled), and the pump is told,
// which abandons a request to peers in flight (expire).
func (c *Endpoint) cancelFrame(id uint64) {
	c.cancelMu.Lock()
	cancel, ok := c.cancels[id]
	if !ok {
		if c.canceled == nil || len(c.canceled) >= maxCanceled {
			c.canceled = map[uint64]struct{}{}
		}
		c.canceled[id] = struct{}{}
	}
	c.cancelMu.Unlock()
	if ok {
		cancel()
		return
	}
	c.sys.Root.Send(c.pid, &callExpired{id: id, canceled: true})
}

// startCancelable registers the cancel func of node-service call id, for
// its Cancel frame, unless that frame came first: then it reports false
// and the call is not to be served. On the pump.
func (c *Endpoint) startCancelable(id uint64, cancel context.CancelFunc) bool {
	c.cancelMu.Lock()
	defer c.cancelMu.Unlock()
	if _, early := c.canceled[id]; early {
		delete(c.canceled, id)
		return false
	}
	if c.cancels == nil {
		c.cancels = map[uint64]context.CancelFunc{}
	}
	c.cancels[id] = cancel
	return true
}

// hasCancel reports whether call id is being served with a cancelable
// context.
func (c *Endpoint) hasCancel(id uint64) bool {
	c.cancelMu.Lock()
	defer c.cancelMu.Unlock()
	_, ok := c.cancels[id]
	return ok
}

// dropCancel forgets call id's cancel func (its call ended).
func (c *Endpoint) dropCancel(id uint64) {
	c.cancelMu.Lock()
	delete(c.cancels, id)
	c.cancelMu.Unlock()
}

// takeCanceled reports whether a Cancel frame came for id before it, and
// forgets it.
func (c *Endpoint) takeCanceled(id uint64) bool {
	c.cancelMu.Lock()
	defer c.cancelMu.Unlock()
	if _, early := c.canceled[id]; early {
		delete(c.canceled, id)
		return true
	}
	return false
}

// refuseCanceled answers a node-service call whose Cancel frame came
// before it was read, without running its handler: CODE_CANCELED, so that
// a call still gets its one reply (the client, which no longer waits,
// counts it late).
func (c *Endpoint) refuseCanceled(r *Incoming) {
	c.stats.Calls.Add(1)
	if c.cfg.ObserveCall != nil {
		c.cfg.ObserveCall(r.Service, 0, pb.Code_CODE_CANCELED)
	}
	if c.ctx.Err() == nil && c.serving.Load() == handlerIdle { // else the connection has ended: nobody waits
		c.writeReply(r.ID, Result{Code: pb.Code_CODE_CANCELED, Payload: []byte("canceled before it was served")})
	}
}
