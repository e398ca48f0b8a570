package cluster

import (
	"bytes"
	"testing"

	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestBufferPool: buffers of the length asked, in powers of two from
// 4 KiB, taken back and handed out again whole; others left to the GC.
func TestBufferPool(t *testing.T) {
	bp := &bufferPool{}
	for _, c := range []struct{ n, cap int }{{0, 4096}, {1, 4096}, {4096, 4096}, {4097, 8192}, {1 << 20, 1 << 20}, {16 << 20, 16 << 20}, {16<<20 + 1, 16<<20 + 1}} {
		b := bp.Get(c.n)
		if len(*b) != c.n || cap(*b) != c.cap {
			t.Fatalf("Get(%d): len %d cap %d, want cap %d", c.n, len(*b), cap(*b), c.cap)
		}
		bp.Put(b)
	}
	// A buffer put back (a prefix of it) is handed out again, whole.
	b := bp.Get(5000)
	(*b)[0] = 42
	*b = (*b)[:10]
	bp.Put(b)
	for range 100 { // sync.Pool may drop it (a GC): try a few times
		c := bp.Get(6000)
		if len(*c) != 6000 || cap(*c) != 8192 {
			t.Fatalf("Get(6000): len %d cap %d", len(*c), cap(*c))
		}
		if c == b {
			return
		}
	}
	t.Log("the buffer put back was never handed out again (sync.Pool dropped it)")
}

// TestLinkCodec: the link's codec writes what proto.Marshal writes and
// reads it back, whole or split over buffers.
func TestLinkCodec(t *testing.T) {
	env := &linkpb.Envelope{Session: 7, Body: &linkpb.Envelope_Data{Data: &linkpb.Data{Seq: 1, Count: 1, Size: 40000, Bytes: bytes.Repeat([]byte("x"), 40000)}}}
	want, _ := proto.Marshal(env)
	bs, err := linkCodec{}.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	if got := bs.Materialize(); !bytes.Equal(got, want) {
		t.Fatal("the codec's bytes differ from proto.Marshal's")
	}
	split := mem.BufferSlice{mem.SliceBuffer(want[:100]), mem.SliceBuffer(want[100:])}
	for _, in := range []mem.BufferSlice{bs, split} {
		var got linkpb.Envelope
		if err := (linkCodec{}).Unmarshal(in, &got); err != nil || !proto.Equal(&got, env) {
			t.Fatalf("read back: %v (%v)", err, got.GetData().GetSeq())
		}
	}
	bs.Free()
	if _, err := (linkCodec{}).Marshal("not a message"); err == nil {
		t.Fatal("the codec marshalled a string")
	}
}
