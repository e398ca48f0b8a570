package switchboard_test

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// A NameClient follows a well-known name's owner, sends it requests and
// receives its notifications: here with Next (synchronous mode) across a
// handover from the owner to its standby. OnOwner, OnOwnerGone and
// OnNotification would get the same on a goroutine of the name client's,
// and Fd with TryNext in a poll loop.
func ExampleNewNameClient() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A service that owns svc.greet (and one waiting as its standby),
	// answering requests and publishing notifications.
	service := func(who string) *switchboard.Conn {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket),
			switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
				return []byte(who + " says hello to " + string(r.Payload)), nil
			}))
		if err != nil {
			panic(err)
		}
		if _, _, err := c.Own(ctx, "svc.greet"); err != nil {
			panic(err)
		}
		return c
	}
	first := service("first")
	second := service("second")
	defer second.Close()
	names := map[string]string{first.Address(): "first", second.Address(): "second"}

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	nc, err := switchboard.NewNameClient(ctx, c, "svc.greet",
		switchboard.NameClientOptions{Notifications: "svc.greet.events"})
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	next := func() {
		e, err := nc.Next(ctx)
		if err != nil {
			panic(err)
		}
		switch e.Kind {
		case switchboard.NameOwner:
			fmt.Println("owner:", names[e.Owner])
		case switchboard.NameOwnerGone:
			fmt.Println("owner gone:", names[e.Owner])
		case switchboard.NameNotification:
			fmt.Printf("notification from %s: %s\n", names[e.From], e.Payload)
		}
	}

	next()
	reply, err := nc.Request(ctx, []byte("you"))
	fmt.Println(string(reply), err)
	first.Publish(ctx, "svc.greet.events", []byte("going away"))
	next()

	first.Close() // the standby takes the name over
	next()
	next()
	done := make(chan *switchboard.AsyncCall, 1)
	nc.Go(ctx, []byte("you again"), done)
	call := <-done
	fmt.Println(string(call.Reply), call.Err)
	// Output:
	// owner: first
	// first says hello to you <nil>
	// notification from first: going away
	// owner gone: first
	// owner: second
	// second says hello to you again <nil>
}
