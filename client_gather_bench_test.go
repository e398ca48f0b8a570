package switchboard

import (
	"context"
	"net"
	"testing"
)

// BenchmarkGather: a 64 KiB call whose payload is one buffer against the
// same 64 KiB gathered from three parts (a header, a body, a trailer), and
// a 64 KiB reply returned whole against one gathered from three parts by a
// BuffersHandler. The gathered forms copy the parts into the ring without
// joining them first: they should cost no more time and no more
// allocations than one buffer.
func BenchmarkGather(b *testing.B) {
	const size = 64 << 10
	n := startNode(b)
	const svcSink, svcReply = 30, 31
	n.HandleFunc(svcSink, func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil })
	whole := make([]byte, size)
	parts := net.Buffers{whole[:64], whole[64 : size-16], whole[size-16:]}
	n.Handle(svcReply, BuffersHandlerFunc(func(ctx context.Context, r *Request) (net.Buffers, error) {
		if r.Command == 1 {
			return net.Buffers{whole}, nil
		}
		return parts, nil
	}))
	c := dial(b, n)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		do   func() error
	}{
		{"call=single", func() error { _, err := c.Call(ctx, svcSink, 1, whole); return err }},
		{"call=3parts", func() error { _, err := c.CallBuffers(ctx, svcSink, 1, parts); return err }},
		{"reply=single", func() error { _, err := c.Call(ctx, svcReply, 1, nil); return err }},
		{"reply=3parts", func() error { _, err := c.Call(ctx, svcReply, 2, nil); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.do(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
