package switchboard

import (
	"context"
	"net"
	"testing"
)

// Allocations of the single-buffer paths, measured when these tests were
// written (one 7-byte payload, a warm connection, shared memory, no
// deadline): Call 6 (its reply's copy, the call's bookkeeping), Send 0,
// Publish 3, Go 8 (the AsyncCall and its reply among them). Each wraps its
// payload in a net.Buffers of one part for the gathering path: the tests
// below assert the wrapper costs nothing, that is, as many allocations as
// the Buffers form it calls, and no more than the figure above.
const (
	callAllocs    = 6
	sendAllocs    = 0
	publishAllocs = 3
	goAllocs      = 8
)

func allocsSetup(t *testing.T) (*Conn, context.Context, []byte) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	n := startNode(t)
	echoService(n)
	return dial(t, n), context.Background(), []byte("payload")
}

// checkAllocs compares the single-buffer form one with its Buffers form
// many, and with the recorded figure.
func checkAllocs(t *testing.T, want float64, one, many func()) {
	t.Helper()
	one()
	many()
	a1 := testing.AllocsPerRun(200, one)
	an := testing.AllocsPerRun(200, many)
	if a1 > an {
		t.Errorf("single buffer: %v allocations, %v for the Buffers form: the net.Buffers conversion allocates", a1, an)
	}
	if a1 > want {
		t.Errorf("single buffer: %v allocations, was %v", a1, want)
	}
}

// TestCallAllocs: Call allocates what CallBuffers does.
func TestCallAllocs(t *testing.T) {
	c, ctx, p := allocsSetup(t)
	checkAllocs(t, callAllocs,
		func() { c.Call(ctx, svcEcho, cmdEcho, p) },
		func() { c.CallBuffers(ctx, svcEcho, cmdEcho, net.Buffers{p}) })
}

// TestSendAllocs: Send allocates nothing, as SendBuffers.
func TestSendAllocs(t *testing.T) {
	c, ctx, p := allocsSetup(t)
	checkAllocs(t, sendAllocs,
		func() { c.Send(ctx, svcEcho, cmdEcho, p) },
		func() { c.SendBuffers(ctx, svcEcho, cmdEcho, net.Buffers{p}) })
}

// TestPublishAllocs: Publish allocates what PublishBuffers does.
func TestPublishAllocs(t *testing.T) {
	c, ctx, p := allocsSetup(t)
	checkAllocs(t, publishAllocs,
		func() { c.Publish(ctx, "allocs.group", p) },
		func() { c.PublishBuffers(ctx, "allocs.group", net.Buffers{p}) })
}

// TestGoAllocs: Go allocates what GoBuffers does.
func TestGoAllocs(t *testing.T) {
	c, ctx, p := allocsSetup(t)
	done := make(chan *AsyncCall, 1)
	checkAllocs(t, goAllocs,
		func() { <-c.Go(ctx, svcEcho, cmdEcho, p, done).Done },
		func() { <-c.GoBuffers(ctx, svcEcho, cmdEcho, net.Buffers{p}, done).Done })
}
