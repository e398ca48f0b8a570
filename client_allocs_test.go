package switchboard

import (
	"context"
	"net"
	"testing"
)

// Allocations of the single-buffer paths, measured when these tests were
// written (one 7-byte payload, a warm connection, shared memory, no
// deadline; the node in this process, so its allocations count too): Call
// 5 (the client's copy of the reply; the test handler's copy of the
// request; the node's Incoming and the handler's context with its cancel
// func, see TestCallAllocsNode), Send 0, Publish 1 (the node's error for
// a group without members: was 3, the options' value escaped, then 2, the
// destination's prefix made for every message), Go 8 (the AsyncCall and
// its reply among them). Each wraps its
// payload in a net.Buffers of one part for the gathering path: the tests
// below assert the wrapper costs nothing, that is, as many allocations as
// the Buffers form it calls, and no more than the figure above.
const (
	callAllocs    = 5
	sendAllocs    = 0
	publishAllocs = 1
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
	a1 := leastAllocs(one)
	an := leastAllocs(many)
	if a1 > an {
		t.Errorf("single buffer: %v allocations, %v for the Buffers form: the net.Buffers conversion allocates", a1, an)
	}
	if a1 > want {
		t.Errorf("single buffer: %v allocations, was %v", a1, want)
	}
}

// leastAllocs is testing.AllocsPerRun(200, f), the least of three: the
// count is the process's, and goroutines another test left ending (in
// the whole suite, with -race) can add to one of them.
func leastAllocs(f func()) float64 {
	least := testing.AllocsPerRun(200, f)
	for range 2 {
		least = min(least, testing.AllocsPerRun(200, f))
	}
	return least
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

// TestPublishAllocs: Publish allocates what PublishBuffers does; to a
// destination other than the last, one more (its prefix).
func TestPublishAllocs(t *testing.T) {
	c, ctx, p := allocsSetup(t)
	checkAllocs(t, publishAllocs,
		func() { c.Publish(ctx, "allocs.group", p) },
		func() { c.PublishBuffers(ctx, "allocs.group", net.Buffers{p}) })
	groups, i := []string{"allocs.a", "allocs.b"}, 0
	if a := leastAllocs(func() { c.Publish(ctx, groups[i%2], p); i++ }); a > publishAllocs+1 {
		t.Errorf("to two groups in turn: %v allocations, want %v", a, publishAllocs+1)
	}
}

// TestGoAllocs: Go allocates what GoBuffers does.
func TestGoAllocs(t *testing.T) {
	c, ctx, p := allocsSetup(t)
	done := make(chan *AsyncCall, 1)
	checkAllocs(t, goAllocs,
		func() { <-c.Go(ctx, svcEcho, cmdEcho, p, done).Done },
		func() { <-c.GoBuffers(ctx, svcEcho, cmdEcho, net.Buffers{p}, done).Done })
}

// TestCallAllocsNode: a 64 B Call on the steady state allocates, client
// and node together, four objects: the reply the client returns (Call's
// result is the caller's to keep; CallView reads it in place instead), and
// in the node the Incoming handed to the handler and the handler's context
// with its cancel func. Each is the call's own: a handler may keep its
// request or its context past its return (a stuck handler's goroutine
// outlives its call, linger.go), so none can be reused for the next call.
// The cancel funcs live in a map that reuses its room (not a sync.Map,
// which allocated an entry per call).
func TestCallAllocsNode(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	n := startNode(t)
	n.HandleFunc(svcEcho, func(ctx context.Context, r *Request) ([]byte, error) { return r.Payload, nil })
	c := dial(t, n)
	ctx := context.Background()
	p := make([]byte, 64)
	call := func() {
		if _, err := c.Call(ctx, svcEcho, cmdEcho, p); err != nil {
			t.Fatal(err)
		}
	}
	call()
	if a := testing.AllocsPerRun(500, call); a > 4 {
		t.Errorf("64 B Call: %v allocations in client and node, want at most 4", a)
	}
}
