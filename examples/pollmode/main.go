// Command pollmode is a client driven by its own epoll loop, as a C-style
// event loop or a program with many descriptors would drive it: it adds
// the connection's Fd() to its epoll set and, when it polls readable,
// takes the waiting events with TryRecvEvent. No goroutine of its own
// waits for events. A second connection publishes ticks to read. When
// the connection ends (the node went), Fd stays readable for good and
// TryRecvEvent returns false: the loop checks Err and stops, with it.
//
//	go run ./examples/pollmode                # with a node of its own
//	go run ./examples/pollmode -socket S -count 10
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
	"golang.org/x/sys/unix"
)

const group = "example.ticks"

func main() {
	socket := flag.String("socket", "", "the node's socket (default: run a node in this process)")
	count := flag.Int("count", 5, "ticks to read before exiting")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *socket, *count); err != nil {
		fmt.Fprintln(os.Stderr, "pollmode:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket string, count int) error {
	if socket == "" {
		dir, err := os.MkdirTemp("", "pollmode-")
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
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("pollmode"))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Subscribe(ctx, group); err != nil {
		return err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(epfd)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, c.Fd(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.Fd())}); err != nil {
		return err
	}

	// The ticker: another client, publishing every 100ms until this one is done.
	tctx, stopTicks := context.WithCancel(ctx)
	ticked := make(chan error, 1)
	go func() { ticked <- tick(tctx, socket) }()
	defer func() { stopTicks(); <-ticked }()

	events := make([]unix.EpollEvent, 8)
	for got := 0; got < count; {
		n, err := unix.EpollWait(epfd, events, 1000) // a real loop would watch its other descriptors too
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if n == 0 {
			fmt.Println("(a second without events)")
			continue
		}
		for { // take everything that waits: the descriptor stays readable until then
			e, ok := c.TryRecvEvent()
			if !ok {
				break
			}
			if e.Kind == switchboard.EventGroup {
				got++
				fmt.Printf("event %d from %s on %s: %s\n", e.Seq, e.From, e.To, e.Payload)
			}
		}
		// TryRecvEvent's false means "nothing waits" or, for good, "the
		// connection ended" (the node went, or Close): Err tells them
		// apart. Once it ended, Fd stays readable for good, so a loop
		// that went on polling it would spin: take it out and stop.
		if err := c.Err(); err != nil {
			unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, c.Fd(), nil)
			if ctx.Err() != nil { // stopped by a signal: the node of our own went with it
				return nil
			}
			return fmt.Errorf("the connection ended: %w", err)
		}
	}
	return nil
}

// tick publishes "tick N" to the group every 100ms until ctx ends.
func tick(ctx context.Context, socket string) error {
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("ticker"))
	if err != nil {
		return err
	}
	defer c.Close()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.Publish(ctx, group, fmt.Appendf(nil, "tick %d", i)); err != nil && ctx.Err() == nil {
			return err
		}
	}
}
