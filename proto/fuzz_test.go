package pb

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

// controlSeeds holds one valid Control of each kind, plus an empty one.
var controlSeeds = []*Control{
	{},
	{Msg: &Control_Hello{Hello: &Hello{
		ProtocolVersion:   1,
		ClientName:        "fuzz",
		Transport:         Transport_TRANSPORT_SHM,
		RequestRingBytes:  1 << 20,
		ResponseRingBytes: 1 << 20,
		EventRingBytes:    1 << 16,
		MaxMessageBytes:   4 << 20,
	}}},
	{Msg: &Control_Welcome{Welcome: &Welcome{
		ProtocolVersion:   1,
		ConnectionId:      42,
		Address:           "n1.c42",
		NodeName:          "n1",
		Transport:         Transport_TRANSPORT_SOCKET,
		RequestRingBytes:  1 << 20,
		ResponseRingBytes: 1 << 20,
		EventRingBytes:    1 << 16,
		MaxMessageBytes:   4 << 20,
		MaxFrameBytes:     64 << 10,
		EventQueueLimit:   1024,
		EventQueueBytes:   8 << 20,
		NodeUid:           1000,
		NodePid:           -1,
	}}},
	{Msg: &Control_Refused{Refused: &Refused{Code: Code_CODE_REFUSED, Reason: "uid 1001 not allowed"}}},
	{Msg: &Control_Goodbye{Goodbye: &Goodbye{Code: Code_CODE_SLOW_CONSUMER, Reason: "event queue full"}}},
	{Msg: &Control_Cancel{Cancel: &Cancel{Id: 1<<64 - 1}}},
	{Msg: &Control_Goodbye{Goodbye: &Goodbye{Code: Code(99)}}}, // a code from a newer node
}

// FuzzControl decodes arbitrary bytes as a Control and, when that succeeds,
// checks that encoding and decoding again gives an equal message.
func FuzzControl(f *testing.F) {
	for _, m := range controlSeeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatalf("marshal seed %v: %v", m, err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Control
		if err := proto.Unmarshal(data, &m); err != nil {
			return
		}
		b, err := proto.Marshal(&m)
		if err != nil {
			t.Fatalf("marshal decoded message %v: %v", &m, err)
		}
		var m2 Control
		if err := proto.Unmarshal(b, &m2); err != nil {
			t.Fatalf("unmarshal re-encoded message %x: %v", b, err)
		}
		if !proto.Equal(&m, &m2) {
			t.Fatalf("round trip changed the message:\nfirst:  %v\nsecond: %v", &m, &m2)
		}
	})
}
