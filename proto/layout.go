package pb

import "github.com/switchboard-ipc/switchboard/shm"

// ConnRings is the ring layout of a shared-memory connection, seen from
// the node (the segment's creator), with ring capacities sizes (request,
// response, event). The node's pump waits on one doorbell for requests and
// for room in the response and event rings; the client's pump on another
// for replies and events; a client caller on a third for room in the
// request ring.
func ConnRings(sizes [3]int) []shm.RingSpec {
	return []shm.RingSpec{
		RingRequest:  {Capacity: sizes[0], DataBell: BellNode, SpaceBell: BellRequestSpace},
		RingResponse: {Capacity: sizes[1], CreatorWrites: true, DataBell: BellClient, SpaceBell: BellNode},
		RingEvent:    {Capacity: sizes[2], CreatorWrites: true, DataBell: BellClient, SpaceBell: BellNode},
	}
}

// IsConnLayout reports whether a segment received from a node has the
// ring layout of ConnRings, doorbells included.
func IsConnLayout(l *shm.Link) bool {
	if l.NumRings() != 3 {
		return false
	}
	want := ConnRings([3]int{})
	for r := range 3 {
		got := l.Spec(r)
		if got.CreatorWrites != want[r].CreatorWrites || got.DataBell != want[r].DataBell || got.SpaceBell != want[r].SpaceBell {
			return false
		}
	}
	return true
}

// Doorbells of a socket-transport client's local rings (SocketRings) that
// ConnRings does not have.
const (
	BellSocketRequest = 0 // the socket writer: request data
	BellSocketSpace   = 3 // the socket reader: room in the response ring
)

// SocketRings is the layout of the local rings through which a
// socket-transport client's goroutines meet its two socket goroutines,
// seen from the socket side (the creator): the client's callers and pump
// use the rings exactly as with shared memory, while one goroutine sends
// what they write to the request ring over the socket and another writes
// what the socket brings into the response ring. Unlike ConnRings, each
// socket goroutine waits on a doorbell of its own.
func SocketRings(sizes [3]int) []shm.RingSpec {
	return []shm.RingSpec{
		RingRequest:  {Capacity: sizes[0], DataBell: BellSocketRequest, SpaceBell: BellRequestSpace},
		RingResponse: {Capacity: sizes[1], CreatorWrites: true, DataBell: BellClient, SpaceBell: BellSocketSpace},
		RingEvent:    {Capacity: sizes[2], CreatorWrites: true, DataBell: BellClient, SpaceBell: BellSocketSpace},
	}
}
