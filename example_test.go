package switchboard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/switchboard-ipc/switchboard"
)

// A node embedded in a program, serving one numbered service, and a client
// of it: a call, and an event sent by the handler.
func Example() {
	dir, _ := os.MkdirTemp("", "switchboard-example-")
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "node.sock")
	ctx := context.Background()

	node, err := switchboard.NewNode(switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	const greeter = 7
	node.HandleFunc(greeter, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		r.SendEvent(1, []byte("someone said hello"))
		return append([]byte("hello, "), r.Payload...), nil
	})
	if err := node.Listen(); err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- node.Serve(ctx) }()
	defer func() {
		node.Close()
		<-served
	}()

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	reply, err := c.Call(ctx, greeter, 1, []byte("world"))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply))
	ev, err := c.RecvEvent(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("event %d from service %d: %s\n", ev.Command, ev.Service, ev.Payload)
	_, err = c.Call(ctx, 8, 1, nil)
	fmt.Println(err)
	// Output:
	// hello, world
	// event 1 from service 7: someone said hello
	// switchboard: unknown service: no service 8
}
