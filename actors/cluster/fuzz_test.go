package cluster

import (
	"testing"

	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/protobuf/proto"
)

// FuzzEnvelope decodes what another node sent and checks it as the link
// does: a Hello through checkHello, Data through a reassembler. Whatever
// the bytes, nothing panics and the reassembler holds at most its limit.
func FuzzEnvelope(f *testing.F) {
	for _, env := range []*linkpb.Envelope{
		{Session: 1, Body: &linkpb.Envelope_Hello{Hello: &linkpb.Hello{Version: 1, Cluster: "c", Node: "n", Incarnation: "i", Address: "127.0.0.1:1"}}},
		{Session: 1, Body: &linkpb.Envelope_Data{Data: &linkpb.Data{Seq: 1, Count: 1, Size: 1, Bytes: []byte("x")}}},
		{Session: 1, Body: &linkpb.Envelope_Data{Data: &linkpb.Data{Seq: 1, Count: 2, Size: ChunkSize + 1, Bytes: make([]byte, ChunkSize)}}},
		{Session: 1, Body: &linkpb.Envelope_Ack{Ack: &linkpb.Ack{Seq: 3}}},
		{Session: 1, Body: &linkpb.Envelope_Bye{Bye: &linkpb.Bye{Code: 2, Reason: "r", To: 1, Address: "h:1"}}},
		{Session: 1, Body: &linkpb.Envelope_Heartbeat{Heartbeat: &linkpb.Heartbeat{}}},
	} {
		b, _ := proto.Marshal(env)
		f.Add(b)
	}
	const limit = 1 << 20
	f.Fuzz(func(t *testing.T, b []byte) {
		var env linkpb.Envelope
		if proto.Unmarshal(b, &env) != nil {
			return
		}
		switch body := env.Body.(type) {
		case *linkpb.Envelope_Hello:
			_ = checkHello(body.Hello)
		case *linkpb.Envelope_Data:
			r := newReassembler(limit)
			r.next = body.Data.Seq
			msg, done, err := r.add(body.Data)
			if err == nil && done && uint64(len(msg)) != body.Data.Size {
				t.Fatalf("a message of %d bytes came out of one declaring %d", len(msg), body.Data.Size)
			}
			if cap(r.buf) > limit {
				t.Fatalf("the reassembler holds %d bytes, past its %d limit", cap(r.buf), limit)
			}
		}
	})
}

// FuzzReassembly feeds a reassembler a run of Data envelopes cut from the
// input: every message it returns is as long as it declared, it never
// holds more than its limit, and once it refuses, the link is closed.
func FuzzReassembly(f *testing.F) {
	f.Add([]byte{1, 0, 1, 3, 0, 0, 'a', 'b', 'c'}, uint8(1))
	f.Add([]byte{1, 0, 2, 0, 5, 0, 'a', 'b', 2, 1, 2, 0, 5, 0, 'c', 'd', 'e'}, uint8(2))
	const limit = 1 << 12
	f.Fuzz(func(t *testing.T, b []byte, shift uint8) {
		// Records: seq delta, index, count, size (2 bytes), n, then n
		// bytes. Chunks are scaled down: the reassembler's ChunkSize is
		// fixed, so sizes here stay under one chunk unless shifted.
		r := newReassembler(limit)
		seq := uint64(0)
		for len(b) >= 6 {
			seq += uint64(b[0])
			size := uint64(b[3]) | uint64(b[4])<<8<<(shift%12)
			n := min(int(b[5]), len(b)-6)
			d := &linkpb.Data{Seq: seq, Index: uint32(b[1]), Count: uint32(b[2]), Size: size, Bytes: b[6 : 6+n]}
			b = b[6+n:]
			msg, done, err := r.add(d)
			if err != nil {
				return
			}
			if done && uint64(len(msg)) != d.Size {
				t.Fatalf("a message of %d bytes came out of one declaring %d", len(msg), d.Size)
			}
			if cap(r.buf) > limit {
				t.Fatalf("the reassembler holds %d bytes, past its %d limit", cap(r.buf), limit)
			}
		}
	})
}

// FuzzUnpack: whatever a Batch's packed bytes hold, unpack neither panics
// nor hands out more than was sent: each message at most packMax, slices
// of the bytes, numbered on from first.
func FuzzUnpack(f *testing.F) {
	f.Add(uint64(1), []byte{1, 'a', 2, 'b', 'c'})
	f.Add(uint64(5), []byte{0x80, 0x08})
	f.Add(uint64(0), []byte{0})
	f.Fuzz(func(t *testing.T, first uint64, packed []byte) {
		next, total := first, 0
		err := unpack(first, packed, func(seq uint64, msg []byte) error {
			if seq != next {
				t.Fatalf("message %d numbered %d", next, seq)
			}
			if len(msg) > packMax || seq-first >= batchChunks {
				t.Fatalf("packed message %d of %d bytes taken", seq-first, len(msg))
			}
			next++
			total += len(msg) + 1
			return nil
		})
		if total > len(packed) {
			t.Fatalf("%d bytes of messages (with lengths) out of %d", total, len(packed))
		}
		if first == 0 && err == nil {
			t.Fatal("packed messages numbered from 0 taken")
		}
	})
}
