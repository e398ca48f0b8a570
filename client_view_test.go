package switchboard

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"
)

// TestCallViewPooledCopy: a CallView reply that the pump delivers (the
// caller had stopped spinning) is a copy from a pool that Release refills,
// not a new allocation per call; each reply is still its own call's,
// whole, while earlier buffers are reused.
func TestCallViewPooledCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	n := startNode(t)
	n.HandleFunc(svcEcho, func(ctx context.Context, r *Request) ([]byte, error) {
		time.Sleep(time.Millisecond) // the caller stops spinning: the pump delivers the reply
		return r.Payload, nil        // no copy of our own: the node copies it into the ring
	})
	c := dial(t, n, WithSpin(0))
	ctx := ctx5(t)
	const size, calls = 64 << 10, 100
	payload := make([]byte, size)
	call := func(i int) {
		for j := range payload {
			payload[j] = byte(i + j)
		}
		r, err := c.CallView(ctx, svcEcho, cmdEcho, payload)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Body, payload) {
			t.Fatalf("call %d: reply differs from its request", i)
		}
		r.Release()
	}
	for i := range 5 { // warm: the pool fills
		call(i)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range calls {
		call(i)
	}
	runtime.ReadMemStats(&after)
	// Without the pool every call allocates its 64 KiB reply; with it,
	// the calls' bookkeeping is a few hundred bytes.
	if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > size/4 {
		t.Fatalf("%d bytes allocated per CallView of %d bytes", per, size)
	}
}
