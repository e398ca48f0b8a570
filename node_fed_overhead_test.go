package switchboard

import (
	"math"
	"strings"
	"testing"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// TestFederationOverhead: the envelope of each message that carries a
// client's payload across a link, with every other field at its largest,
// adds at most FederationOverhead to the payload, so that a link sized
// max message + FederationOverhead carries the node's largest message.
func TestFederationOverhead(t *testing.T) {
	payload := make([]byte, 16<<20)
	name := strings.Repeat("n", pb.MaxNameLen)
	addr := ":" + strings.Repeat("a", 64) + "." + strings.Repeat("i", 64) + ".18446744073709551615"
	for _, m := range []*pb.FedMessage{
		{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: math.MaxUint64, To: math.MaxUint64, Payload: payload, Rid: math.MaxUint64}}},
		{Body: &pb.FedMessage_Publish{Publish: &pb.FedPublish{From: math.MaxUint64, Group: name, Payload: payload}}},
		{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: math.MaxUint64, From: math.MaxUint64, To: math.MaxUint64,
			Dest: name, DeadlineUs: math.MaxUint32, Payload: payload}}},
		{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: math.MaxUint64, From: math.MaxUint64, To: math.MaxUint64,
			Dest: addr, DeadlineUs: math.MaxUint32, Payload: payload}}},
		{Body: &pb.FedMessage_Reply{Reply: &pb.FedReply{Rid: math.MaxUint64, Code: pb.Code(math.MaxInt32), Payload: payload}}},
	} {
		if over := len(encode(m)) - len(payload); over > FederationOverhead {
			t.Errorf("%T adds %d bytes to a payload, more than FederationOverhead (%d)", m.Body, over, FederationOverhead)
		}
	}
}
