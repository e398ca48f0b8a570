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

// Done is closed when the connection ends, for any reason; Err then says
// why, matched with errors.Is: here the node shut down, and said so.
func ExampleConn_Done() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fmt.Println("while connected:", c.Err())

	node.Close()
	select {
	case <-c.Done():
	case <-ctx.Done():
		panic("the end never came")
	}
	err = c.Err()
	fmt.Println("shut down:", errors.Is(err, switchboard.ErrNodeShutdown))
	fmt.Println("lost:", errors.Is(err, switchboard.ErrNodeLost))
	fmt.Println("node gone:", errors.Is(err, switchboard.ErrNodeGone))
	// Output:
	// while connected: <nil>
	// shut down: true
	// lost: false
	// node gone: true
}

// Err after Close is ErrClosed; the disconnect handler hears the same,
// and Close waits for it.
func ExampleConn_Err() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket),
		switchboard.WithDisconnectHandler(func(err error) {
			fmt.Println("disconnected:", err)
		}))
	if err != nil {
		panic(err)
	}
	c.Close()
	fmt.Println("closed by us:", errors.Is(c.Err(), switchboard.ErrClosed))
	// Output:
	// disconnected: switchboard: closed
	// closed by us: true
}

// A Dial before the node listens fails with ErrNodeNotReady, which is
// worth retrying; WithWaitForNode retries until ctx ends.
func ExampleWithWaitForNode() {
	dir, err := os.MkdirTemp("", "switchboard-example-") // mode 0700
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "node.sock")

	_, err = switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
	fmt.Println("not ready:", errors.Is(err, switchboard.ErrNodeNotReady))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithWaitForNode())
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()

	node, err := switchboard.NewNode(switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	if err := node.Listen(); err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- node.Serve(context.Background()) }()
	fmt.Println("waiting Dial:", <-dialed)
	node.Close()
	<-served
	// Output:
	// not ready: true
	// waiting Dial: <nil>
}
