// Command peerrpc shows peer RPC by well-known name. A server owns
// "example.kv" and answers requests with WithRequestHandler, and publishes
// each change to "example.kv.changes"; a second server queues as its
// standby and takes the name over when the first leaves. The demo's
// client is a NameClient of "example.kv": it follows the name's owner
// (told when one appears or goes, with its address), sends its requests
// by name, never needing an address, and receives the changes. The
// one-shot client (below) calls Request("example.kv").
//
//	go run ./examples/peerrpc                           # all in one process, with a node of its own
//	go run ./examples/peerrpc -socket S server A        # against a running node: a server (run two) …
//	go run ./examples/peerrpc -socket S client set k v  # … and a client: set KEY VALUE | get KEY
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

const (
	name    = "example.kv"
	changes = "example.kv.changes" // the servers' notifications
)

func main() {
	socket := flag.String("socket", "", "the node's socket (default for the demo: run a node in this process)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, *socket, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "peerrpc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket string, args []string) error {
	switch {
	case len(args) == 2 && args[0] == "server":
		s, err := server(ctx, socket, args[1])
		if err != nil {
			return err
		}
		defer s.Close()
		for { // a standby reports taking the name over (an owner, having it)
			if err := takeOver(ctx, s, args[1]); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	case len(args) >= 3 && args[0] == "client":
		c, err := dial(ctx, socket, "kv-client")
		if err != nil {
			return err
		}
		defer c.Close()
		reply, err := c.Request(ctx, name, []byte(strings.Join(args[1:], " ")))
		if err != nil {
			return err
		}
		fmt.Printf("%s\n", reply)
		return nil
	case len(args) > 0:
		return errors.New("usage: peerrpc [-socket PATH] [server LABEL | client set KEY VALUE | client get KEY]")
	}
	if socket == "" { // the demo, with a node of its own
		dir, err := os.MkdirTemp("", "peerrpc-")
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
	a, err := server(ctx, socket, "A")
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := server(ctx, socket, "B")
	if err != nil {
		return err
	}
	defer b.Close()

	// The client: a name client of example.kv on a connection of its own,
	// in synchronous mode (Next), so that this demo prints in one order.
	c, err := dial(ctx, socket, "kv-client")
	if err != nil {
		return err
	}
	defer c.Close()
	nc, err := switchboard.NewNameClient(ctx, c, name, switchboard.NameClientOptions{Notifications: changes})
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := follow(ctx, nc, 1); err != nil { // the owner, A
		return err
	}
	if err := request(ctx, nc, "set color blue", 1); err != nil {
		return err
	}
	if err := request(ctx, nc, "get color", 0); err != nil {
		return err
	}
	fmt.Println("A leaves")
	a.Close()
	if err := takeOver(ctx, b, "B"); err != nil {
		return err
	}
	if err := follow(ctx, nc, 2); err != nil { // A gone, B its owner
		return err
	}
	if err := request(ctx, nc, "set color green", 1); err != nil {
		return err
	}
	return request(ctx, nc, "get color", 0)
}

// request sends a request to the name's owner, whoever it is, prints the
// reply, then the n notifications it brought.
func request(ctx context.Context, nc *switchboard.NameClient, req string, n int) error {
	reply, err := nc.Request(ctx, []byte(req))
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", reply)
	return follow(ctx, nc, n)
}

// follow prints the name client's next n events. (With callbacks instead,
// NameClientOptions.OnOwner, OnOwnerGone and OnNotification get them on a
// goroutine of the name client; in a poll loop, Fd and TryNext.)
func follow(ctx context.Context, nc *switchboard.NameClient, n int) error {
	for range n {
		e, err := nc.Next(ctx)
		if err != nil {
			return err
		}
		switch e.Kind {
		case switchboard.NameOwner:
			fmt.Printf("client: %s is served by %s\n", nc.Name(), e.Owner)
		case switchboard.NameOwnerGone:
			fmt.Printf("client: %s left %s\n", e.Owner, nc.Name())
		case switchboard.NameNotification:
			fmt.Printf("client: %s changed %s\n", e.From, e.Payload)
		}
	}
	return nil
}

// dial connects to the node at socket as clientName, WithReconnect: the
// servers and the client outlive a restart of the node — a server claims
// example.kv again (or queues as standby) and says what it got back, and
// the client's name client keeps following the owner across it.
func dial(ctx context.Context, socket, clientName string, opts ...switchboard.DialOption) (*switchboard.Conn, error) {
	opts = append([]switchboard.DialOption{switchboard.WithSocket(socket), switchboard.WithClientName(clientName),
		switchboard.WithReconnect(switchboard.ReconnectPolicy{})}, opts...)
	return switchboard.Dial(ctx, opts...)
}

// server connects, serves a key-value store of its own to requests,
// publishing each change to the changes group, and claims the name: as
// its owner, or queued as a standby.
func server(ctx context.Context, socket, label string) (*switchboard.Conn, error) {
	store := map[string]string{} // the handler runs one request at a time
	var c *switchboard.Conn
	dialled := make(chan struct{}) // c is set
	handle := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
		f := strings.Fields(string(r.Payload))
		switch {
		case len(f) == 3 && f[0] == "set":
			store[f[1]] = f[2]
			<-dialled
			if err := c.Publish(ctx, changes, []byte(f[1]+"="+f[2])); err != nil { // before the reply: the client sees it after
				return nil, err
			}
			return []byte("[" + label + "] ok"), nil
		case len(f) == 2 && f[0] == "get":
			if v, ok := store[f[1]]; ok {
				return []byte("[" + label + "] " + v), nil
			}
			return nil, fmt.Errorf("[%s] no key %q", label, f[1])
		}
		return nil, fmt.Errorf("[%s] want set KEY VALUE or get KEY", label)
	}
	c, err := dial(ctx, socket, "kv-"+label, switchboard.WithRequestHandler(handle))
	if err != nil {
		return nil, err
	}
	close(dialled)
	primary, pos, err := c.Own(ctx, name)
	if err != nil {
		c.Close()
		return nil, err
	}
	if primary {
		fmt.Printf("server %s (%s) owns %s\n", label, c.Address(), name)
	} else {
		fmt.Printf("server %s (%s) is standby %d for %s\n", label, c.Address(), pos, name)
	}
	return c, nil
}

// takeOver waits for the node's notice that s now owns the name (which
// comes at once to a server that got it when it asked).
func takeOver(ctx context.Context, s *switchboard.Conn, label string) error {
	for {
		e, err := s.RecvEvent(ctx)
		if err != nil {
			return err
		}
		if r := e.Reconnection(); r != nil {
			if e.Kind == switchboard.EventDisconnected {
				fmt.Printf("server %s: the node went (%v); reconnecting\n", label, r.Err)
			} else {
				fmt.Printf("server %s: back as %s after %v; owns %v, standby for %v\n", label, r.NewAddress, r.Gap.Round(time.Millisecond), r.Names, r.Lost)
			}
			continue
		}
		if n, err := e.Notice(); err == nil && n.Kind == switchboard.NoticeNameAcquired && n.Name == name {
			fmt.Printf("server %s: the node says it owns %s now\n", label, name)
			return nil
		}
	}
}
