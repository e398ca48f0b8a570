package switchboard

import (
	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"

	"errors"
	"fmt"
	"io"
	"net"

	"github.com/switchboard-ipc/switchboard/shm"
)

// writeControl sends a control frame, with fds attached if any.
func writeControl(c *net.UnixConn, m *pb.Control, fds []int) error {
	body, err := gproto.Marshal(m)
	if err != nil {
		return err
	}
	frame := shm.AppendFrame(nil, shm.Header{Kind: pb.KindControl}, body)
	if len(fds) > 0 {
		return shm.SendFds(c, frame, fds...)
	}
	_, err = c.Write(frame)
	return err
}

// readControl reads one control frame (and no more) from c.
func readControl(c *net.UnixConn) (*pb.Control, error) {
	hdr := make([]byte, shm.HeaderSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	return finishControl(c, hdr)
}

// finishControl reads the rest of a control frame whose header is in hdr.
func finishControl(c io.Reader, hdr []byte) (*pb.Control, error) {
	const maxControl = 64 << 10
	_, _, err := shm.DecodeFrame(hdr, maxControl)
	if err != nil && !errors.Is(err, shm.ErrIncomplete) {
		return nil, err
	}
	n := int(uint32(hdr[0]) | uint32(hdr[1])<<8 | uint32(hdr[2])<<16 | uint32(hdr[3])<<24)
	buf := make([]byte, shm.FrameSize(n))
	copy(buf, hdr)
	if _, err := io.ReadFull(c, buf[len(hdr):]); err != nil {
		return nil, err
	}
	f, _, err := shm.DecodeFrame(buf, maxControl)
	if err != nil {
		return nil, err
	}
	if f.Kind != pb.KindControl {
		return nil, fmt.Errorf("switchboard: frame kind %d, want a control frame", f.Kind)
	}
	var m pb.Control
	if err := gproto.Unmarshal(f.Body, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// connRings is the ring layout of a connection, seen from the node (the
// segment's creator). The node's pump waits on one doorbell for requests,
// and for room in the response and event rings; the client's pump on
// another for replies and events; a client caller on a third for room in
// the request ring.
func connRings(sizes [3]int) []shm.RingSpec {
	return []shm.RingSpec{
		pb.RingRequest:  {Capacity: sizes[0], DataBell: pb.BellNode, SpaceBell: pb.BellRequestSpace},
		pb.RingResponse: {Capacity: sizes[1], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: pb.BellNode},
		pb.RingEvent:    {Capacity: sizes[2], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: pb.BellNode},
	}
}

// The client's local rings for the socket transport, seen from the node's
// side (the bridge): unlike the node's layout, the bridge's two goroutines
// (socket to rings, rings to socket) each wait on a doorbell of their own.
const (
	clientBellRequestData = 0
	clientBellRingSpace   = 3
)

// clientLayout reports whether the node's segment has the ring layout of
// the protocol, doorbells included (connRings).
func clientLayout(l *shm.Link) bool {
	if l.NumRings() != 3 {
		return false
	}
	want := connRings([3]int{})
	for r := range 3 {
		got := l.Spec(r)
		if got.CreatorWrites != want[r].CreatorWrites || got.DataBell != want[r].DataBell || got.SpaceBell != want[r].SpaceBell {
			return false
		}
	}
	return true
}

func clientLocalRings(sizes [3]int) []shm.RingSpec {
	return []shm.RingSpec{
		pb.RingRequest:  {Capacity: sizes[0], DataBell: clientBellRequestData, SpaceBell: pb.BellRequestSpace},
		pb.RingResponse: {Capacity: sizes[1], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: clientBellRingSpace},
		pb.RingEvent:    {Capacity: sizes[2], CreatorWrites: true, DataBell: pb.BellClient, SpaceBell: clientBellRingSpace},
	}
}
