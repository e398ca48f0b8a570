package switchboard

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
)

// WithEventWait sets how long an event a handler sends to its caller
// (Request.SendEvent, SendEventBuffers, WriteEvent) waits for room when
// the caller's event ring is full (default 10ms; 0 never waits). Waiting,
// the event goes into the ring as the client makes room, instead of being
// copied into the node's queue for that client; a client that makes no
// room in time gets it the queue's way (WithEventQueue, WithOverflow),
// and while that queue holds events nothing waits. The wait ends at once
// when the connection ends or its client says goodbye. Events sent
// through the Session or the Node never wait. A handler that waits holds
// its request, so a client's Close that waits for the node to take what
// the client sent (WithCloseTimeout) may wait as long.
func WithEventWait(d time.Duration) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if d < 0 {
			return errors.New("switchboard: negative event wait")
		}
		o.eventWait = d
		return nil
	})
}

// WriteEvent sends the caller an event whose payload fill writes in place,
// from the handler, like SendEvent: n is the room fill gets and fill
// returns how many bytes of it are the payload. When the payload fits one
// frame of the caller's event ring (half the ring) and room comes in time
// (WithEventWait), p is the ring's own memory, where the client reads the
// event: the payload is written once and never copied by the node (a
// loan, as iceoryx2's loan or Aeron's tryClaim). Otherwise p is a buffer
// of the event's own, queued without a further copy.
//
// An error from fill abandons the event: nothing is sent, the room is
// given back, and WriteEvent returns that error (as it returns an error,
// sending nothing, when fill reports a length outside [0, n]). fill runs before
// WriteEvent returns and must be quick: it must not block, send events,
// or keep p, whose bytes the client may read as soon as WriteEvent
// returns. While fill writes the ring's memory the connection cannot be
// taken from the handler: a fill that blocks there holds the connection
// (its release, and Node.Close, wait for it) where a handler that ignores
// its context is reaped after WithHandlerGrace. (A fill given a buffer of
// its own is reaped like the handler.) A payload larger than one frame
// never waits for room: it takes the queue's path at once, where
// SendEvent's would wait. WriteEvent returns ErrTooLarge (nothing sent, fill not called)
// when n exceeds the connection's largest message.
func (r *Request) WriteEvent(command uint16, n int, fill func(p []byte) (int, error)) error {
	if r.NoReply && r.Session == nil {
		return nil
	}
	err := r.Session.c.WriteEventFromServe(r.Service, command, n, fill)
	if errors.Is(err, conn.ErrTooLarge) {
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return err
}
