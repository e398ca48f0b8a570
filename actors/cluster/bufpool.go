package cluster

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// linkBuffers is the buffer pool of the links' gRPC connections, both
// ways, in place of grpc-go's default, which clears each buffer it hands
// out, its whole capacity: every message over 32 KiB (a link's Batch of a
// burst) took a 1 MiB buffer and cleared it, ~10% of a receiving node's
// CPU at 64 B publications. These buffers hold only what gRPC reads or
// writes into them, up to the length asked for; they are not cleared.
var linkBuffers = &bufferPool{}

const (
	minBufShift = 12 // 4 KiB: the smallest buffer handed out
	maxBufShift = 24 // 16 MiB: larger ones are made, and left to the GC
)

// bufferPool hands out buffers of powers of two from 4 KiB to 16 MiB,
// kept in one sync.Pool per size (grpc's mem.BufferPool).
type bufferPool struct {
	tiers [maxBufShift - minBufShift + 1]sync.Pool
}

// Get returns a buffer of length n.
func (bp *bufferPool) Get(n int) *[]byte {
	shift := max(bits.Len(uint(max(n, 1)-1)), minBufShift)
	if shift > maxBufShift {
		b := make([]byte, n)
		return &b
	}
	if b, ok := bp.tiers[shift-minBufShift].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

// Put takes back a buffer Get handed out (any prefix of it); others are
// left to the GC.
func (bp *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minBufShift || c > 1<<maxBufShift || c&(c-1) != 0 {
		return
	}
	bp.tiers[bits.Len(uint(c))-1-minBufShift].Put(b)
}

// linkCodec is grpc-go's protobuf codec over linkBuffers: grpc-go's own
// takes its marshalling buffers from its default pool, which clears them
// (a 64 KiB message cleared a 1 MiB buffer). The bytes on the wire are the
// same.
type linkCodec struct{}

func (linkCodec) Name() string { return "proto" }

func (linkCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("cluster: marshalling %T, not a protobuf message", v)
	}
	size := proto.Size(m)
	buf := linkBuffers.Get(size)
	out, err := (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend((*buf)[:0], m)
	if err != nil {
		linkBuffers.Put(buf)
		return nil, err
	}
	if len(out) != size || (size > 0 && &out[0] != &(*buf)[0]) {
		// Not what Size said (never, for a message nobody changes
		// meanwhile): send what was written, and never a pooled
		// buffer's stale tail.
		linkBuffers.Put(buf)
		return mem.BufferSlice{mem.SliceBuffer(out)}, nil
	}
	return mem.BufferSlice{mem.NewBuffer(buf, linkBuffers)}, nil
}

func (linkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("cluster: unmarshalling into %T, not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(linkBuffers)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
