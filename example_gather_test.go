package switchboard_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Gathered sends: a header and a body sent as one message without joining
// them first (CallBuffers; every send method has its Buffers form), and a
// handler that gathers its reply the same way (BuffersHandlerFunc). The
// receiver sees the parts' concatenation.
func ExampleConn_CallBuffers() {
	node, socket, stop := exampleNode()
	defer stop()
	const framed = 7
	node.Handle(framed, switchboard.BuffersHandlerFunc(func(ctx context.Context, r *switchboard.Request) (net.Buffers, error) {
		// The reply's parts may be views of the request: they are written
		// before its memory is given back.
		return net.Buffers{[]byte("got <"), r.Payload, []byte(">")}, nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()

	header := []byte("v1|")
	body := []byte("hello")
	reply, err := c.CallBuffers(ctx, framed, 1, net.Buffers{header, body})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", reply)
	// Output:
	// got <v1|hello>
}

// Asynchronous calls: one goroutine starts several calls at once and
// takes their completions from one channel, in whatever order they come
// (here printed in the order the calls were started). Cancelling a call's
// context completes it with the context's error.
func ExampleConn_Go() {
	node, socket, stop := exampleNode()
	defer stop()
	const upper, slow = 7, 8
	node.HandleFunc(upper, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		out := make([]byte, len(r.Payload))
		for i, b := range r.Payload {
			if 'a' <= b && b <= 'z' {
				b -= 'a' - 'A'
			}
			out[i] = b
		}
		return out, nil
	})
	node.HandleFunc(slow, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		<-ctx.Done() // until the caller cancels
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()

	words := []string{"one", "two", "three"}
	done := make(chan *switchboard.AsyncCall, len(words)) // room for every call in flight
	var calls []*switchboard.AsyncCall
	for _, w := range words {
		calls = append(calls, c.Go(ctx, upper, 1, []byte(w), done))
	}
	for range calls {
		<-done
	}
	for _, a := range calls {
		fmt.Printf("%s: %v\n", a.Reply, a.Err)
	}

	stopCtx, stopIt := context.WithCancel(ctx)
	a := c.Go(stopCtx, slow, 1, nil, nil) // nil: a channel of its own
	stopIt()
	a = <-a.Done
	fmt.Println(a.Err)
	// Output:
	// ONE: <nil>
	// TWO: <nil>
	// THREE: <nil>
	// context canceled
}
