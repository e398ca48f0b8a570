package switchboard

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// DialOption configures Dial.
type DialOption func(*dialOptions) error

// NodeOption configures a Node.
type NodeOption func(*nodeOptions) error

// WithSocket sets the node's socket path (default DefaultSocketPath()).
func WithSocket(path string) DialOption {
	return func(o *dialOptions) error { o.socket = path; return nil }
}

// WithSocketPath sets the Unix socket the node listens on.
func WithSocketPath(path string) NodeOption {
	return func(o *nodeOptions) error { o.socket = path; return nil }
}

// WithRings asks for ring sizes in bytes (0 keeps the node's default); the
// node rounds them to powers of two within its limits.
func WithRings(request, response, event int) DialOption {
	return func(o *dialOptions) error {
		for _, n := range []int{request, response, event} {
			if n < 0 || n > math.MaxUint32 {
				return fmt.Errorf("switchboard: ring size %d out of range", n)
			}
		}
		o.rings = [3]uint32{uint32(request), uint32(response), uint32(event)}
		return nil
	}
}

// WithRingSizes sets the default request, response and event ring sizes
// (powers of two; default 1 MiB each). A client may ask for others.
func WithRingSizes(request, response, event int) NodeOption {
	return func(o *nodeOptions) error {
		for _, n := range []int{request, response, event} {
			if n < shm.MinRingCapacity || n > shm.MaxRingCapacity || bits.OnesCount(uint(n)) != 1 {
				return fmt.Errorf("switchboard: ring size %d is not a power of two in [%d, %d]", n, shm.MinRingCapacity, shm.MaxRingCapacity)
			}
		}
		o.rings = [3]int{request, response, event}
		return nil
	}
}

// WithMaxMessageSize asks for a smaller message limit than the node's.
func WithMaxMessageSize(n int) DialOption {
	return func(o *dialOptions) error {
		if n <= 0 || n > math.MaxUint32 {
			return fmt.Errorf("switchboard: max message %d out of range", n)
		}
		o.maxMessage = uint32(n)
		return nil
	}
}

// WithMaxMessage sets the largest message, in bytes, a connection may send
// or receive (default 16 MiB). Messages larger than a ring frame are
// chunked.
func WithMaxMessage(n int) NodeOption {
	return func(o *nodeOptions) error {
		if n <= 0 || n > 1<<30 {
			return fmt.Errorf("switchboard: max message %d out of range", n)
		}
		o.maxMessage = n
		return nil
	}
}

// WithSpin sets how long waits spin before parking (see shm.WithSpin).
func WithSpin(d time.Duration) DialOption {
	return func(o *dialOptions) error { o.spin = &d; return nil }
}

// WithNodeSpin sets how long the node's pumps spin before parking (see
// shm.WithSpin); the default spins only when a core is to spare.
func WithNodeSpin(d time.Duration) NodeOption {
	return func(o *nodeOptions) error { o.spin = &d; return nil }
}

// WithEventBuffer bounds the events held in this process before they are
// delivered (default 1024). When it is full the connection stops reading
// its event ring, and the node's queue and overflow policy take over.
func WithEventBuffer(n int) DialOption {
	return func(o *dialOptions) error {
		if n <= 0 {
			return errors.New("switchboard: event queue must hold at least one event")
		}
		o.eventQueue = n
		return nil
	}
}

// WithEventQueue bounds the events the node queues for one client whose
// event ring is full (default 1024 events or 4 MiB), and sets the policy
// past that bound.
func WithEventQueue(events, bytes int, policy OverflowPolicy) NodeOption {
	return func(o *nodeOptions) error {
		if events < 0 || bytes < 0 {
			return errors.New("switchboard: negative event queue bound")
		}
		o.eventQueue, o.eventBytes, o.overflow = events, bytes, policy
		return nil
	}
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
