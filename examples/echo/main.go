// Command echo is a libqb-style echo service and its client in one small
// program: a node embedded in the serving process, one numbered service,
// and a client that calls it and prints the reply.
//
//	go run ./examples/echo serve                 # terminal 1
//	go run ./examples/echo call "hello, echo"    # terminal 2
//	go run ./examples/echo -every 1s call hi     # calls until interrupted; restart serve meanwhile
//
// With -every the client is dialled WithReconnect: when the serving process
// restarts, it says so, comes back by itself, and its calls, made
// WaitForReconnect, wait for it instead of failing.
//
// Both take -socket (default: a directory of its own in the system temp
// directory, since a node refuses to serve from one others may write).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

const (
	echoService = 100 // the service id this example serves
	echoCommand = 1
)

func main() {
	socket := flag.String("socket", filepath.Join(os.TempDir(), fmt.Sprintf("switchboard-echo-%d", os.Geteuid()), "node.sock"), "the node's socket")
	every := flag.Duration("every", 0, "call: call again at this interval, reconnecting when the node restarts")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch flag.Arg(0) {
	case "serve":
		err = serve(ctx, *socket)
	case "call":
		err = call(ctx, *socket, flag.Arg(1), *every)
	default:
		fmt.Fprintln(os.Stderr, "usage: echo [-socket PATH] serve | [-every D] call MESSAGE")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// serve runs a node with the echo service until interrupted.
func serve(ctx context.Context, socket string) error {
	node, err := switchboard.NewNode(switchboard.WithSocket(socket))
	if err != nil {
		return err
	}
	node.HandleFunc(echoService, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		if r.Command != echoCommand {
			return nil, switchboard.ErrUnknownCommand
		}
		return r.Payload, nil // the node copies the reply before it releases the request
	},
		switchboard.WithOnConnect(func(s *switchboard.Session) error {
			fmt.Printf("%s (pid %d, uid %d) uses the echo service\n", s.Address(), s.Cred().PID, s.Cred().UID)
			return nil
		}))
	if err := node.Listen(); err != nil {
		node.Close()
		return err
	}
	fmt.Println("echo service", echoService, "on", socket, "- Ctrl-C to stop")
	return node.Serve(ctx)
}

// call sends one message and prints the reply and the round trip; with
// every > 0, again at that interval until interrupted.
func call(ctx context.Context, socket, msg string, every time.Duration) error {
	opts := []switchboard.DialOption{switchboard.WithSocket(socket), switchboard.WithClientName("echo-client")}
	if every > 0 {
		opts = append(opts, switchboard.WithReconnect(switchboard.ReconnectPolicy{Max: every}),
			switchboard.WithEventHandler(func(e switchboard.Event) {
				switch r := e.Reconnection(); e.Kind {
				case switchboard.EventDisconnected:
					fmt.Printf("the node went (%v); reconnecting\n", r.Err)
				case switchboard.EventReconnected:
					fmt.Printf("back after %v, as %s\n", r.Gap.Round(time.Millisecond), r.NewAddress)
				}
			}))
	}
	c, err := switchboard.Dial(ctx, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		err := callOnce(ctx, c, msg)
		switch {
		case every > 0 && errors.Is(err, switchboard.ErrNodeGone):
			// In flight when the node went: never resent by the Conn;
			// this loop calls again at its next turn.
			fmt.Println("call lost with the node:", err)
		case err != nil:
			return err
		}
		if every <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// callOnce calls the echo service; during a gap, the call waits for the
// reconnection (WaitForReconnect), bounded by 5 s.
func callOnce(ctx context.Context, c *switchboard.Conn, msg string) error {
	ctx, cancel := context.WithTimeout(switchboard.WaitForReconnect(ctx), 5*time.Second)
	defer cancel()
	start := time.Now()
	reply, err := c.Call(ctx, echoService, echoCommand, []byte(msg))
	if err != nil {
		return err
	}
	fmt.Printf("%s (round trip %v)\n", reply, time.Since(start))
	return nil
}
