package switchboard_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
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

// exampleNode starts a node of its own for an example, as Example does:
// its socket is in a new directory that only this user may write (a node
// refuses a socket directory that its group or others may write). stop
// closes the node and removes the directory.
func exampleNode() (node *switchboard.Node, socket string, stop func()) {
	dir, err := os.MkdirTemp("", "switchboard-example-") // mode 0700
	if err != nil {
		panic(err)
	}
	socket = filepath.Join(dir, "node.sock")
	node, err = switchboard.NewNode(switchboard.WithSocket(socket))
	if err == nil {
		err = node.Listen()
	}
	if err != nil {
		os.RemoveAll(dir)
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- node.Serve(context.Background()) }()
	return node, socket, func() {
		node.Close()
		<-served
		os.RemoveAll(dir)
	}
}

// Dial connects to a node; Call calls one of its services, here the
// system service every node serves. Errors are matched by code.
func ExampleDial() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("example"))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	reply, err := c.Call(ctx, switchboard.SystemService, switchboard.SysEcho, []byte("ping"))
	if err != nil {
		panic(err)
	}
	fmt.Printf("echo: %s\n", reply)

	_, err = c.Call(ctx, switchboard.SystemService, 99, nil)
	fmt.Println(errors.Is(err, switchboard.ErrUnknownCommand))
	var e *switchboard.Error
	if errors.As(err, &e) {
		fmt.Println("code:", e.Code)
	}
	// Output:
	// echo: ping
	// true
	// code: unknown command
}

// A service keeps per-connection state in Session.Data: WithOnConnect
// sets it up at a connection's first request, and handlers of one
// connection run one at a time, so it needs no lock.
func ExampleNode_HandleFunc() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	type visits struct{ n int }
	const counter = 20
	gone := make(chan string, 2)
	node.HandleFunc(counter, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		v := r.Session.Data.(*visits)
		v.n++
		return fmt.Appendf(nil, "%s: visit %d", r.Session.Name(), v.n), nil
	},
		switchboard.WithOnConnect(func(s *switchboard.Session) error {
			s.Data = &visits{}
			return nil
		}),
		switchboard.WithOnDisconnect(func(s *switchboard.Session) {
			gone <- fmt.Sprintf("%s left after %d visits", s.Name(), s.Data.(*visits).n)
		}))

	alice, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("alice"))
	if err != nil {
		panic(err)
	}
	bob, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("bob"))
	if err != nil {
		panic(err)
	}
	defer bob.Close()
	for _, c := range []*switchboard.Conn{alice, alice, bob} {
		reply, err := c.Call(ctx, counter, 1, nil)
		if err != nil {
			panic(err)
		}
		fmt.Println(string(reply))
	}
	alice.Close()
	fmt.Println(<-gone)
	// Output:
	// alice: visit 1
	// alice: visit 2
	// bob: visit 1
	// alice left after 2 visits
}

// RecvEvent pulls a connection's events, in order, each a copy: the
// default way to receive them. Here a service sends three events to its
// caller.
func ExampleConn_RecvEvent() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node.HandleFunc(30, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		for i := 1; i <= 3; i++ {
			r.SendEvent(1, fmt.Appendf(nil, "tick %d", i))
		}
		return nil, nil
	})

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, 30, 1, nil); err != nil {
		panic(err)
	}
	for range 3 {
		ev, err := c.RecvEvent(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Printf("event %d: %s\n", ev.Seq, ev.Payload)
		ev.Release() // optional: lets a large payload's buffer be reused
	}
	// Output:
	// event 1: tick 1
	// event 2: tick 2
	// event 3: tick 3
}

// WithEventHandler calls a function for each event, in order, on a
// goroutine of the connection's own.
func ExampleWithEventHandler() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node.HandleFunc(30, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		for i := 1; i <= 3; i++ {
			r.SendEvent(1, fmt.Appendf(nil, "tick %d", i))
		}
		return nil, nil
	})

	events := make(chan string, 3)
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket),
		switchboard.WithEventHandler(func(ev switchboard.Event) {
			events <- fmt.Sprintf("handler got %s", ev.Payload) // the handler must not call Close
		}))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, 30, 1, nil); err != nil {
		panic(err)
	}
	for range 3 {
		fmt.Println(<-events)
	}
	// Output:
	// handler got tick 1
	// handler got tick 2
	// handler got tick 3
}

// WithEventActor sends each event to a protoactor actor as an *Event
// message, for programs built of actors.
func ExampleWithEventActor() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node.HandleFunc(30, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		for i := 1; i <= 3; i++ {
			r.SendEvent(1, fmt.Appendf(nil, "tick %d", i))
		}
		return nil, nil
	})

	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler) // protoactor logs to stderr by default
	}))
	defer sys.Shutdown()
	events := make(chan string, 3)
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if ev, ok := ac.Message().(*switchboard.Event); ok {
			events <- fmt.Sprintf("actor got %s", ev.Payload)
		}
	}))
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithEventActor(sys, pid))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, 30, 1, nil); err != nil {
		panic(err)
	}
	for range 3 {
		fmt.Println(<-events)
	}
	// Output:
	// actor got tick 1
	// actor got tick 2
	// actor got tick 3
}

// Poll mode: Fd is a descriptor that polls readable while events wait, for
// a program with its own poll, select or epoll loop; TryRecvEvent takes
// them without blocking.
func ExampleConn_Fd() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node.HandleFunc(30, func(ctx context.Context, r *switchboard.Request) ([]byte, error) {
		for i := 1; i <= 3; i++ {
			r.SendEvent(1, fmt.Appendf(nil, "tick %d", i))
		}
		return nil, nil
	})

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fds := []unix.PollFd{{Fd: int32(c.Fd()), Events: unix.POLLIN}} // kept up to date from the first Fd on
	if _, err := c.Call(ctx, 30, 1, nil); err != nil {
		panic(err)
	}
	for got := 0; got < 3; {
		n, err := unix.Poll(fds, 10_000)
		if err != nil && err != unix.EINTR {
			panic(err)
		}
		if n == 0 { // timed out: stop, with output that fails the example
			fmt.Printf("no event within 10s (%d of 3)\n", got)
			return
		}
		for { // take all that waits: the descriptor stays readable until then
			ev, ok := c.TryRecvEvent()
			if !ok {
				break
			}
			got++
			fmt.Printf("polled %s\n", ev.Payload)
		}
	}
	// Output:
	// polled tick 1
	// polled tick 2
	// polled tick 3
}

// SubscribeWithMembers joins a group and lists its members at once; every
// later change of the group's membership arrives as a notice, and so do
// connections and disconnections on the reserved group GroupConnections.
func ExampleConn_SubscribeWithMembers() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recv := func(c *switchboard.Conn) (switchboard.Event, switchboard.Notice) {
		ev, err := c.RecvEvent(ctx)
		if err != nil {
			panic(err)
		}
		var n switchboard.Notice
		if ev.Kind == switchboard.EventNotice {
			n, _ = ev.Notice()
		}
		return ev, n
	}

	watcher, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("watcher"))
	if err != nil {
		panic(err)
	}
	defer watcher.Close()
	members, err := watcher.SubscribeWithMembers(ctx, "chat")
	if err != nil {
		panic(err)
	}
	for _, m := range members {
		fmt.Println("member of chat:", m.ClientName)
	}
	if err := watcher.Subscribe(ctx, switchboard.GroupConnections); err != nil {
		panic(err)
	}

	poster, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("poster"))
	if err != nil {
		panic(err)
	}
	_, n := recv(watcher)
	fmt.Println(n.Kind, n.Member.ClientName)
	if err := poster.Subscribe(ctx, "chat"); err != nil {
		panic(err)
	}
	ev, n := recv(watcher)
	fmt.Println(n.Kind, n.Member.ClientName, "on", ev.To)
	if err := poster.Publish(ctx, "chat", []byte("hello"), switchboard.WantAnswer()); err != nil {
		panic(err)
	}
	ev, _ = recv(watcher)
	fmt.Printf("message on %s: %s\n", ev.To, ev.Payload)

	// The poster leaves: the group and sys.connections announce it. The two
	// notices come from different groups, in either order.
	poster.Close()
	left := map[switchboard.NoticeKind]switchboard.Notice{}
	for len(left) < 2 {
		_, n := recv(watcher)
		left[n.Kind] = n
	}
	for _, k := range []switchboard.NoticeKind{switchboard.NoticeUnsubscribed, switchboard.NoticeDisconnected} {
		fmt.Println(k, left[k].Member.ClientName, left[k].Reason)
	}
	// Output:
	// member of chat: watcher
	// NOTICE_CONNECTED poster
	// NOTICE_SUBSCRIBED poster on chat
	// message on chat: hello
	// NOTICE_UNSUBSCRIBED poster DISCONNECT_CLOSED
	// NOTICE_DISCONNECTED poster DISCONNECT_CLOSED
}

// A client serves requests from peers with WithRequestHandler and Owns a
// well-known name; others Request it by name. A second owner waits as a
// standby and takes the name over when the first goes.
func ExampleConn_Own() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server := func(name string) *switchboard.Conn {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName(name),
			switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
				return fmt.Appendf(nil, "%s looked up %s", name, r.Payload), nil
			}))
		if err != nil {
			panic(err)
		}
		return c
	}

	client, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	_, err = client.Request(ctx, "svc.kv", []byte("x"))
	fmt.Println("before anyone owns it:", errors.Is(err, switchboard.ErrUndeliverable))

	first, second := server("kv-1"), server("kv-2")
	defer second.Close()
	primary, _, err := first.Own(ctx, "svc.kv")
	if err != nil {
		panic(err)
	}
	fmt.Println("kv-1 owns svc.kv:", primary)
	primary, position, err := second.Own(ctx, "svc.kv")
	if err != nil {
		panic(err)
	}
	fmt.Println("kv-2 owns svc.kv:", primary, "standby position", position)

	reply, err := client.Request(ctx, "svc.kv", []byte("x"))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply))

	first.Close()
	ev, err := second.RecvEvent(ctx) // the node tells the standby
	if err != nil {
		panic(err)
	}
	if n, err := ev.Notice(); err == nil {
		fmt.Println(n.Kind, n.Name)
	}
	reply, err = client.Request(ctx, "svc.kv", []byte("y"))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply))
	// Output:
	// before anyone owns it: true
	// kv-1 owns svc.kv: true
	// kv-2 owns svc.kv: false standby position 1
	// kv-1 looked up x
	// NOTICE_NAME_ACQUIRED svc.kv
	// kv-2 looked up y
}

// WithRequestActor sends requests from peers to a protoactor actor as
// *PeerRequest messages; the actor answers each with Respond.
func ExampleWithRequestActor() {
	_, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler) // protoactor logs to stderr by default
	}))
	defer sys.Shutdown()
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if r, ok := ac.Message().(*switchboard.PeerRequest); ok {
			r.Respond(fmt.Appendf(nil, "actor says hi to %s", r.Payload), nil)
		}
	}))
	server, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithRequestActor(sys, pid))
	if err != nil {
		panic(err)
	}
	defer server.Close()
	client, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	reply, err := client.Request(ctx, server.Address(), []byte("you"))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply))
	// Output:
	// actor says hi to you
}

// Embedding a node: NewNode configures it, Listen creates the socket (so
// that clients may connect at once), Serve accepts until its context ends
// or Close is called, and then closes the node.
func ExampleNewNode() {
	dir, err := os.MkdirTemp("", "switchboard-example-") // mode 0700: the node refuses a directory others may write
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	node, err := switchboard.NewNode(
		switchboard.WithSocket(filepath.Join(dir, "node.sock")),
		switchboard.WithNodeName("embedded"),
		switchboard.WithLogger(slog.New(slog.DiscardHandler)), // the default: give it a handler to see its logs
	)
	if err != nil {
		panic(err)
	}
	if err := node.Listen(); err != nil {
		node.Close()
		panic(err)
	}
	ctx, stopServing := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- node.Serve(ctx) }()
	defer node.Close() // idempotent: a second Close does no harm

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(node.SocketPath()))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	info, err := c.NodeInfo(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("connected to", info.Name, "over", info.Transport)

	stopServing()
	fmt.Println("Serve returned", <-served)
	_, err = c.Call(context.Background(), switchboard.SystemService, switchboard.SysPing, nil)
	fmt.Println(errors.Is(err, switchboard.ErrNodeGone))
	// Output:
	// connected to embedded over shm
	// Serve returned <nil>
	// true
}

// HandleActor makes a protoactor actor serve a service: the node spawns it
// from props under its own root actor and supervises it. Each call arrives
// as an *ActorRequest; the actor's state needs no lock, since it takes one
// message at a time.
func ExampleNode_HandleActor() {
	node, socket, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	calls := 0
	pid, err := node.HandleActor(40, actor.PropsFromFunc(func(ac actor.Context) {
		if r, ok := ac.Message().(*switchboard.ActorRequest); ok {
			calls++
			r.Respond(fmt.Appendf(nil, "call %d: %s", calls, r.Payload), nil) // now or later, from any goroutine
		}
	}))
	if err != nil {
		panic(err)
	}
	_ = pid // the actor's address on node.ActorSystem(), e.g. to send it messages of your own

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for _, p := range []string{"a", "b"} {
		reply, err := c.Call(ctx, 40, 1, []byte(p))
		if err != nil {
			panic(err)
		}
		fmt.Println(string(reply))
	}
	// Output:
	// call 1: a
	// call 2: b
}
