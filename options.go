package switchboard

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// A DialOption configures Dial.
type DialOption interface{ applyDial(*dialOptions) error }

// A NodeOption configures NewNode.
type NodeOption interface{ applyNode(*nodeOptions) error }

// An Option configures a setting both ends have (the socket, the ring
// sizes, the message limit, spinning, the event queue): it is a DialOption
// and a NodeOption, and means to each end what its doc says.
type Option struct {
	dial func(*dialOptions) error
	node func(*nodeOptions) error
}

func (o Option) applyDial(d *dialOptions) error { return o.dial(d) }
func (o Option) applyNode(n *nodeOptions) error { return o.node(n) }

// dialOption is a DialOption of the client alone.
type dialOption func(*dialOptions) error

func (f dialOption) applyDial(o *dialOptions) error { return f(o) }

// nodeOption is a NodeOption of the node alone.
type nodeOption func(*nodeOptions) error

func (f nodeOption) applyNode(o *nodeOptions) error { return f(o) }

// WithSocket sets the Unix socket the node listens on and a client dials
// (default DefaultSocketPath()).
func WithSocket(path string) Option {
	return Option{
		dial: func(o *dialOptions) error { o.socket = path; return nil },
		node: func(o *nodeOptions) error { o.socket = path; return nil },
	}
}

// The smallest and largest ring, in bytes.
const (
	MinRingSize = shm.MinRingCapacity
	MaxRingSize = shm.MaxRingCapacity
)

// WithRings sets ring sizes in bytes: for a node, the request, response
// and event rings a connection gets by default (powers of two; default 1
// MiB each); for a client, the sizes it asks for (0 keeps the node's
// default; the node rounds them to powers of two within its limits).
func WithRings(request, response, event int) Option {
	return Option{
		dial: func(o *dialOptions) error {
			for _, n := range []int{request, response, event} {
				if n < 0 || n > math.MaxUint32 {
					return fmt.Errorf("switchboard: ring size %d out of range", n)
				}
			}
			o.rings = [3]uint32{uint32(request), uint32(response), uint32(event)}
			return nil
		},
		node: func(o *nodeOptions) error {
			for _, n := range []int{request, response, event} {
				if n < shm.MinRingCapacity || n > shm.MaxRingCapacity || bits.OnesCount(uint(n)) != 1 {
					return fmt.Errorf("switchboard: ring size %d is not a power of two in [%d, %d]", n, shm.MinRingCapacity, shm.MaxRingCapacity)
				}
			}
			o.rings = [3]int{request, response, event}
			return nil
		},
	}
}

// WithMaxMessage sets the largest message, in bytes: for a node, what a
// connection may send or receive (default 16 MiB); for a client, a smaller
// limit than the node's to ask for. Messages larger than a ring frame are
// chunked.
func WithMaxMessage(n int) Option {
	return Option{
		dial: func(o *dialOptions) error {
			if n <= 0 || n > math.MaxUint32 {
				return fmt.Errorf("switchboard: max message %d out of range", n)
			}
			o.maxMessage = uint32(n)
			return nil
		},
		node: func(o *nodeOptions) error {
			if n <= 0 || n > 1<<30 {
				return fmt.Errorf("switchboard: max message %d out of range", n)
			}
			o.maxMessage = n
			return nil
		},
	}
}

// WithSpin sets how long at most a waiting goroutine (a client's caller or
// pump, a node's pump) spins before it parks (see shm.WithSpin); by default
// each end spins only when a core is to spare. Each spin adapts within that
// bound: a caller waiting for its reply spins less while replies come long
// after it gives up (shm.NewReplySpinner), a pump while its peer is slow to
// answer (shm.NewSpinner).
func WithSpin(d time.Duration) Option {
	return Option{
		dial: func(o *dialOptions) error { o.spin = &d; return nil },
		node: func(o *nodeOptions) error { o.spin = &d; return nil },
	}
}

// WithEventQueue bounds the events queued on their way to a client: for a
// node, the events it queues for one client whose event ring is full
// (default 1024; see WithEventQueueBytes and WithOverflow for what happens
// past it); for a client, the events held in its process before they are
// delivered (default 1024, at least 1): when that is full the client
// stops reading its event ring, and the node's queue takes over.
func WithEventQueue(events int) Option {
	return Option{
		dial: func(o *dialOptions) error {
			if events <= 0 {
				return errors.New("switchboard: event queue must hold at least one event")
			}
			o.eventQueue = events
			return nil
		},
		node: func(o *nodeOptions) error {
			if events < 0 {
				return errors.New("switchboard: negative event queue bound")
			}
			o.eventQueue = events
			return nil
		},
	}
}

// WithEventQueueBytes bounds the payload bytes a node queues for one
// client whose event ring is full (default 4 MiB).
func WithEventQueueBytes(bytes int) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if bytes < 0 {
			return errors.New("switchboard: negative event queue bound")
		}
		o.eventBytes = bytes
		return nil
	})
}

// WithOverflow sets what a node does when a client's event queue is full
// (default DropOldest).
func WithOverflow(p OverflowPolicy) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.overflow = p; return nil })
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
