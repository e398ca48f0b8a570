// Command benchpeer is one process of a peer benchmark: a server, a broker's
// responder, or a client, for one system. benchrun starts it; nobody needs
// to run it by hand.
//
//	benchpeer -peer NAME -role ROLE [flags]
//
// Roles: serve (a server, or a responder attached to a broker), broker (a
// broker in a process of its own: NATS), rpc, events, fanpub, fansub, p2p,
// connect, idle, version; for the cross-node rows (cross.go) xnode and
// xbroker (one of two linked nodes), xresp, xrpc, xpub, xsub. A server or
// broker prints "ready ADDRESS" on stdout once it accepts clients; a client prints one JSON result line
// (see result) when it is done; "idle" prints "ready" once it holds its
// connections and then waits. Every process exits when its standard input
// closes, so a dead benchrun leaves no process behind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// errPending marks a workload a peer will support but does not yet (the
// Switchboard bus API being built); benchrun prints it as "n/a (pending)".
var errPending = errors.New("pending")

// errUnsupported marks a workload that does not apply to a peer.
var errUnsupported = errors.New("unsupported")

// args are the flags every role reads.
type args struct {
	peer, role string
	addr       string        // the server's or broker's address
	target     string        // p2p: the responder's address, as it printed it
	size       int           // payload bytes
	dur        time.Duration // how long to measure
	n          int           // idle: connections to hold; fanpub: subscribers
	id         int           // this client's number among its peers
	window     int           // events and fan-out: messages per credit window
	transport  string        // switchboard: shm or socket
	dir        string        // a private directory for sockets
	name       string        // xnode, xbroker: this node's name
	join       string        // xnode, xbroker: the other node's link (route) address
}

// roleFunc runs one role of one peer.
type roleFunc func(ctx context.Context, a *args) (*result, error)

// peers maps a peer name to its roles. A role missing from a peer's map
// is errUnsupported.
var peers = map[string]map[string]roleFunc{}

func register(peer string, roles map[string]roleFunc) { peers[peer] = roles }

func main() {
	var a args
	flag.StringVar(&a.peer, "peer", "", "system: unix, shm, nats, grpc, dbus, switchboard")
	flag.StringVar(&a.role, "role", "", "what this process does")
	flag.StringVar(&a.addr, "addr", "", "server or broker address")
	flag.StringVar(&a.target, "target", "", "p2p: the responder's address")
	flag.IntVar(&a.size, "size", 64, "payload bytes")
	flag.DurationVar(&a.dur, "dur", time.Second, "measuring time")
	flag.IntVar(&a.n, "n", 1, "connections (idle) or subscribers (fanpub)")
	flag.IntVar(&a.id, "id", 0, "client number")
	flag.IntVar(&a.window, "window", 0, "messages per credit window (0: by size)")
	flag.StringVar(&a.transport, "transport", "shm", "switchboard transport: shm or socket")
	flag.StringVar(&a.dir, "dir", os.TempDir(), "directory for sockets")
	flag.StringVar(&a.name, "name", "a", "xnode, xbroker: this node's name")
	flag.StringVar(&a.join, "join", "", "xnode, xbroker: the other node's link (route) address")
	flag.Parse()
	if a.window == 0 {
		a.window = defaultWindow(a.size)
	}
	os.Exit(run(&a))
}

func run(a *args) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // parent death: benchrun holds our stdin; a line on it is "go"
		var b [64]byte
		var once sync.Once
		for {
			n, err := os.Stdin.Read(b[:])
			if n > 0 {
				once.Do(func() { close(start) })
			}
			if err != nil {
				cancel()
				return
			}
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; cancel() }()

	roles, ok := peers[a.peer]
	if !ok {
		fmt.Fprintf(os.Stderr, "benchpeer: unknown peer %q\n", a.peer)
		return 2
	}
	f, ok := roles[a.role]
	if !ok {
		printResult(&result{Err: errUnsupported.Error()})
		return 0
	}
	res, err := f(ctx, a)
	if err != nil {
		if res == nil {
			res = &result{}
		}
		res.Err = err.Error()
		printResult(res)
		if errors.Is(err, errPending) || errors.Is(err, errUnsupported) {
			return 0
		}
		return 1
	}
	if res != nil {
		printResult(res)
	}
	return 0
}

// defaultWindow is the credit window: the messages a receiver lets a
// sender have outstanding (two windows are in flight). 1000 × 64 B or
// 16 × 64 KiB: within every peer's default queue limits.
func defaultWindow(size int) int {
	if size >= 16<<10 {
		return 16
	}
	return 500
}

// start closes when benchrun says go (see waitStart).
var start = make(chan struct{})

// syncEnv, when set, makes concurrent clients start measuring together:
// each says ready after its warm-up and waits for benchrun's go.
const syncEnv = "BENCH_SYNC"

// waitStart waits for benchrun's go if it asked for one.
func waitStart(ctx context.Context) error {
	if os.Getenv(syncEnv) == "" {
		return nil
	}
	ready("")
	select {
	case <-start:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ready tells benchrun that a server listens at addr, or that an idle
// client holds its connections.
func ready(addr string) {
	fmt.Printf("ready %s\n", addr)
	os.Stdout.Sync()
}

// holdUntilDone waits until benchrun closes our stdin or signals us.
func holdUntilDone(ctx context.Context) { <-ctx.Done() }
