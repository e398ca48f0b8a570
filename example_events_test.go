package switchboard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/switchboard-ipc/switchboard"
)

// A handler that streams readings to its caller, each written straight
// into the caller's event ring (Request.WriteEvent): no buffer of its own,
// no copy by the node.
func ExampleRequest_WriteEvent() {
	dir, _ := os.MkdirTemp("", "switchboard-example-")
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "node.sock")
	ctx := context.Background()

	node, err := switchboard.NewNode(switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	const sensor = 7
	node.HandleFunc(sensor, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		for i := range 3 {
			// At most 32 bytes of room; the reading is formatted into it.
			err := r.WriteEvent(1, 32, func(p []byte) (int, error) {
				return len(strconv.AppendInt(append(p[:0], "reading "...), int64(20+i), 10)), nil
			})
			if err != nil {
				return nil, err
			}
		}
		return nil, nil
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
	if _, err := c.Call(ctx, sensor, 1, nil); err != nil {
		panic(err)
	}
	for range 3 {
		ev, err := c.RecvEvent(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s\n", ev.Payload)
		ev.Release()
	}
	// Output:
	// reading 20
	// reading 21
	// reading 22
}
