package switchboard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// serveAt runs a node on socket until the returned stop is called.
func serveAt(socket string) (stop func()) {
	node, err := switchboard.NewNode(switchboard.WithSocket(socket))
	if err == nil {
		err = node.Listen()
	}
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- node.Serve(context.Background()) }()
	return func() {
		node.Close()
		<-served
	}
}

// nextGapEvent skips c's events up to an EventDisconnected or
// EventReconnected (here, the notices of the name being acquired).
func nextGapEvent(ctx context.Context, c *switchboard.Conn) switchboard.Event {
	for {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			panic(err)
		}
		if e.Reconnection() != nil {
			return e
		}
	}
}

// A Conn dialled WithReconnect comes back by itself when its node
// restarts: it is told of the gap (EventDisconnected), fails calls at once
// meanwhile unless their ctx asks to wait (WaitForReconnect), and is told
// what it got back (EventReconnected): its groups, and its names.
func ExampleWithReconnect() {
	dir, err := os.MkdirTemp("", "switchboard-example-") // mode 0700
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "node.sock")
	stop := serveAt(socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket),
		switchboard.WithReconnect(switchboard.ReconnectPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "news"); err != nil {
		panic(err)
	}
	if _, _, err := c.Own(ctx, "example.clock"); err != nil {
		panic(err)
	}

	stop() // the node goes
	e := nextGapEvent(ctx, c)
	fmt.Println("disconnected:", e.Kind == switchboard.EventDisconnected, errors.Is(e.Reconnection().Err, switchboard.ErrNodeShutdown))
	_, err = c.Names(ctx)
	fmt.Println("a call meanwhile:", errors.Is(err, switchboard.ErrNodeGone))
	fmt.Println("Err meanwhile:", c.Err())

	defer serveAt(socket)() // another node comes
	names, err := c.Names(switchboard.WaitForReconnect(ctx))
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		if n.Name == "example.clock" {
			fmt.Println("owner is this Conn again:", n.Owner == c.Address())
		}
	}
	e = nextGapEvent(ctx, c)
	r := e.Reconnection()
	fmt.Println("reconnected:", e.Kind == switchboard.EventReconnected, r.NewAddress != r.OldAddress)
	fmt.Println("groups:", r.Groups, "names:", r.Names, "lost:", r.Lost)
	// Output:
	// disconnected: true true
	// a call meanwhile: true
	// Err meanwhile: <nil>
	// owner is this Conn again: true
	// reconnected: true true
	// groups: [news] names: [example.clock] lost: []
}
