package switchboard_test

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Flush waits until the node has taken every message accepted so far:
// here, 1000 publications are routed to a subscriber before Flush
// returns, so its queue holds them all. Close flushes too, and counts in
// an *UnsentError whatever the node never took.
func ExampleConn_Flush() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sub, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	if err := sub.Subscribe(ctx, "news"); err != nil {
		panic(err)
	}
	pub, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithCloseTimeout(time.Second))
	if err != nil {
		panic(err)
	}
	for i := range 1000 {
		if err := pub.Publish(ctx, "news", fmt.Appendf(nil, "item %d", i)); err != nil {
			panic(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		panic(err) // an *UnsentError says how many the node had not taken
	}
	fmt.Println("accepted:", pub.FlowControl().Accepted)
	if err := pub.Close(); err != nil {
		panic(err)
	}
	last := ""
	for range 1000 {
		ev, err := sub.RecvEvent(ctx)
		if err != nil {
			panic(err)
		}
		last = string(ev.Payload)
	}
	fmt.Println("last received:", last)
	// Output:
	// accepted: 1000
	// last received: item 999
}
