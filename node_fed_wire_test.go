package switchboard

import (
	"bytes"
	"testing"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// TestFedPublishWire: appendFedPublish writes what proto.Marshal writes
// for the same FedMessage, and parseFedPublish reads it back.
func TestFedPublishWire(t *testing.T) {
	for _, c := range []struct {
		from    uint64
		group   string
		payload []byte
	}{
		{0, "", nil}, {1, "g", []byte("x")}, {1 << 63, "bench.xfan", bytes.Repeat([]byte{7}, 200)},
		{300, "a.b.c", nil}, {0, "", []byte{0}}, {42, "grüße", make([]byte, 70000)},
	} {
		want, err := gproto.Marshal(&pb.FedMessage{Body: &pb.FedMessage_Publish{Publish: &pb.FedPublish{From: c.from, Group: c.group, Payload: c.payload}}})
		if err != nil {
			t.Fatal(err)
		}
		got := appendFedPublish(nil, c.from, c.group, c.payload)
		if !bytes.Equal(got, want) {
			t.Fatalf("appendFedPublish(%d, %q, %d bytes) = %x, proto.Marshal = %x", c.from, c.group, len(c.payload), got, want)
		}
		from, group, payload, ok := parseFedPublish(got)
		if !ok || from != c.from || string(group) != c.group || !bytes.Equal(payload, c.payload) {
			t.Fatalf("parseFedPublish read (%d, %q, %d bytes, %v), want (%d, %q, %d bytes)", from, group, len(payload), ok, c.from, c.group, len(c.payload))
		}
	}
	// What it does not read, proto.Unmarshal does (or refuses).
	for _, m := range []gproto.Message{
		&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: 1, To: 2}}},
		&pb.FedMessage{},
	} {
		b, _ := gproto.Marshal(m)
		if _, _, _, ok := parseFedPublish(b); ok {
			t.Fatalf("parseFedPublish took %x (%v)", b, m)
		}
	}
	bad := appendFedPublish(nil, 1, "\xff", nil) // a group that is not UTF-8
	if _, _, _, ok := parseFedPublish(bad); ok {
		t.Fatal("parseFedPublish took a group that is not UTF-8")
	}
}

// FuzzFedPublishWire: whatever parseFedPublish takes, proto.Unmarshal
// reads as the same publication (it never reads a message otherwise than
// the node's general decoder would); and what appendFedPublish writes,
// proto.Marshal writes.
func FuzzFedPublishWire(f *testing.F) {
	f.Add(appendFedPublish(nil, 5, "g", []byte("payload")), uint64(5), "g", []byte("payload"))
	f.Add([]byte{0x3a, 0x02, 0x08, 0x01}, uint64(0), "", []byte(nil))
	f.Add([]byte{0x3a, 0x04, 0x08, 0x01, 0x08, 0x02}, uint64(1), "x.y", []byte{1})
	f.Fuzz(func(t *testing.T, msg []byte, from uint64, group string, payload []byte) {
		if f, g, p, ok := parseFedPublish(msg); ok {
			var m pb.FedMessage
			if err := gproto.Unmarshal(msg, &m); err != nil {
				t.Fatalf("parseFedPublish took %x, which proto.Unmarshal refuses: %v", msg, err)
			}
			pub := m.GetPublish()
			if pub == nil || pub.GetFrom() != f || pub.GetGroup() != string(g) || !bytes.Equal(pub.GetPayload(), p) {
				t.Fatalf("parseFedPublish read %x as (%d, %q, %x); proto.Unmarshal as %v", msg, f, g, p, &m)
			}
		}
		want, err := gproto.Marshal(&pb.FedMessage{Body: &pb.FedMessage_Publish{Publish: &pb.FedPublish{From: from, Group: group, Payload: payload}}})
		if err != nil {
			return // a group that is not UTF-8: the node never sends one
		}
		if got := appendFedPublish(nil, from, group, payload); !bytes.Equal(got, want) {
			t.Fatalf("appendFedPublish(%d, %q, %x) = %x, proto.Marshal = %x", from, group, payload, got, want)
		}
	})
}
