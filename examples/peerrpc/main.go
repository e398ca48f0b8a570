// Command peerrpc shows peer RPC by well-known name. A server owns
// "example.kv" and answers requests with WithRequestHandler; a second
// server queues as its standby and takes the name over when the first
// leaves; a client, through a name client of "example.kv", never needs an
// address. The servers are dialled WithReconnect: if the node restarts,
// each comes back by itself and claims the name again (the one that gets
// there second queues as standby), and says what it got back.
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

const name = "example.kv"

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
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("kv-client"))
		if err != nil {
			return err
		}
		defer c.Close()
		nc, err := switchboard.NewNameClient(ctx, c, name, switchboard.NameClientOptions{})
		if err != nil {
			return err
		}
		defer nc.Close()
		reply, err := nc.Request(ctx, []byte(strings.Join(args[1:], " ")))
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
	for _, req := range []string{"client set color blue", "client get color"} {
		if err := run(ctx, socket, strings.Fields(req)); err != nil {
			return err
		}
	}
	fmt.Println("A leaves")
	a.Close()
	if err := takeOver(ctx, b, "B"); err != nil {
		return err
	}
	return errors.Join(run(ctx, socket, strings.Fields("client set color green")), run(ctx, socket, strings.Fields("client get color")))
}

// server connects, serves a key-value store of its own to requests, and
// claims the name: as its owner, or queued as a standby.
func server(ctx context.Context, socket, label string) (*switchboard.Conn, error) {
	store := map[string]string{} // the handler runs one request at a time
	handle := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
		f := strings.Fields(string(r.Payload))
		switch {
		case len(f) == 3 && f[0] == "set":
			store[f[1]] = f[2]
			return []byte("[" + label + "] ok"), nil
		case len(f) == 2 && f[0] == "get":
			if v, ok := store[f[1]]; ok {
				return []byte("[" + label + "] " + v), nil
			}
			return nil, fmt.Errorf("[%s] no key %q", label, f[1])
		}
		return nil, fmt.Errorf("[%s] want set KEY VALUE or get KEY", label)
	}
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("kv-"+label),
		switchboard.WithRequestHandler(handle), switchboard.WithReconnect(switchboard.ReconnectPolicy{}))
	if err != nil {
		return nil, err
	}
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
// comes at once to a server that got it when it asked), telling meanwhile
// of the node going and s coming back.
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
