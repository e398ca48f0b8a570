// Command pubsub shows publish/subscribe with notices. The subscriber joins
// a group with SubscribeWithMembers (the members at that instant, then a
// notice for each change, none missed) and follows sys.connections (every
// client connecting and leaving); the publisher publishes to the group.
//
//	go run ./examples/pubsub                    # all in one process, with a node of its own
//	go run ./examples/pubsub -socket S sub      # against a running node: a subscriber …
//	go run ./examples/pubsub -socket S pub hi   # … and a publisher, from another terminal
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/switchboard-ipc/switchboard"
)

const group = "example.chat"

func main() {
	socket := flag.String("socket", "", "the node's socket (default for the demo: run a node in this process; for sub and pub: the default path)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch flag.Arg(0) {
	case "sub":
		err = subscribe(ctx, *socket, 0, nil)
	case "pub":
		err = publish(ctx, *socket, flag.Args()[1:])
	case "":
		err = demo(ctx, *socket)
	default:
		fmt.Fprintln(os.Stderr, "usage: pubsub [-socket PATH] [sub | pub MESSAGE...]")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pubsub:", err)
		os.Exit(1)
	}
}

// demo runs a subscriber and a publisher, with a node of its own unless
// socket names one.
func demo(ctx context.Context, socket string) error {
	if socket == "" {
		dir, err := os.MkdirTemp("", "pubsub-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		node, err := switchboard.NewNode(switchboard.WithSocket(filepath.Join(dir, "node.sock")))
		if err != nil {
			return err
		}
		if err := node.Listen(); err != nil {
			node.Close()
			return err
		}
		served := make(chan error, 1)
		go func() { served <- node.Serve(ctx) }()
		defer func() { node.Close(); <-served }()
		socket = node.SocketPath()
	}
	ready := make(chan struct{})
	subscribed := make(chan error, 1)
	go func() { subscribed <- subscribe(ctx, socket, 3, ready) }()
	select {
	case <-ready:
	case err := <-subscribed:
		return err
	}
	if err := publish(ctx, socket, []string{"hello", "from", "the publisher"}); err != nil {
		return err
	}
	return <-subscribed
}

// subscribe prints the group's messages and the notices, until count
// messages (0: until ctx ends); it closes ready once it listens.
func subscribe(ctx context.Context, socket string, count int, ready chan<- struct{}) error {
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("pubsub-sub"))
	if err != nil {
		return err
	}
	defer c.Close()
	members, err := c.SubscribeWithMembers(ctx, group)
	if err != nil {
		return err
	}
	for _, m := range members {
		fmt.Printf("sub: member of %s: %s (%s, pid %d)\n", group, m.Address, m.ClientName, m.Cred.PID)
	}
	if err := c.Subscribe(ctx, switchboard.GroupConnections); err != nil {
		return err
	}
	if ready != nil {
		close(ready)
	}
	for got := 0; count == 0 || got < count; {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C ends a subscriber
			}
			return err
		}
		switch e.Kind {
		case switchboard.EventGroup:
			got++
			fmt.Printf("sub: message from %s on %s: %s\n", e.From, e.To, e.Payload)
		case switchboard.EventNotice:
			n, err := e.Notice()
			if err != nil {
				return err
			}
			what := strings.ToLower(strings.TrimPrefix(n.Kind.String(), "NOTICE_"))
			fmt.Printf("sub: notice on %s: %s %s (%s) %s\n", e.To, what, n.Member.Address, n.Member.ClientName, n.Group)
		}
	}
	return nil
}

// publish joins the group (a member does not get its own messages back)
// and sends each message to it; it fails if nobody is there to take one.
func publish(ctx context.Context, socket string, msgs []string) error {
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("pubsub-pub"))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Subscribe(ctx, group); err != nil {
		return err
	}
	for _, m := range msgs {
		if err := c.Publish(ctx, group, []byte(m), switchboard.WantAnswer()); err != nil {
			return err
		}
		fmt.Printf("pub: published %q to %s\n", m, group)
	}
	return nil
}
