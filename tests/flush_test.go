package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// publications is how many messages the flush tests publish before
// closing: the figure of issue 12, fewer with -short.
func publications() int {
	if testing.Short() {
		return 20000
	}
	return 200000
}

// TestCloseLosesNothing: a publisher publishes N messages (every Publish
// returns nil) and closes at once; a subscriber in another process gets
// every one, or the publisher's Close counts those the node never took
// (none while the node is alive). Nothing is silently gone.
func TestCloseLosesNothing(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		n := publications()
		_, socket := nodeChild(t, "SB_EVENT_QUEUE=300000")
		trEnv := "SB_TRANSPORT=" + strconv.Itoa(int(tr))
		sub, _ := startPeer(t, "peer", socket, "SB_MODE=count", "SB_GROUPS=flood", trEnv, "SB_CLIENT_QUEUE=300000",
			fmt.Sprintf("SB_EXPECT=%d", n))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithTransport(tr))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i := range n {
			if err := c.Publish(ctx, "flood", []byte("p "+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		published := time.Since(start)
		err = c.Close()
		closed := time.Since(start) - published
		unsent := 0
		var ue *switchboard.UnsentError
		switch {
		case errors.As(err, &ue):
			unsent = int(ue.Unsent)
		case err != nil:
			t.Fatal(err)
		}
		fc := c.FlowControl()
		if fc.Accepted != uint64(n) || fc.Unsent != uint64(unsent) {
			t.Errorf("FlowControl: accepted %d unsent %d, want %d and %d", fc.Accepted, fc.Unsent, n, unsent)
		}
		got := n - unsent
		if unsent > 0 { // the subscriber waits for n: stop it once it has what it will get
			time.Sleep(2 * time.Second)
			sub.cmd.Process.Signal(syscall.SIGTERM)
		}
		line := waitLine(t, sub, "got ")
		t.Logf("%d publications in %v, Close in %v: %d not handed over; subscriber: %s", n, published, closed, unsent, line)
		if want := fmt.Sprintf("got %d dropped 0 disorder 0", got); line != want {
			t.Fatalf("subscriber: %s, want %s (delivered + not handed over = %d)", line, want, n)
		}
		if unsent != 0 {
			t.Errorf("%d not handed over to a live node", unsent)
		}
	})
}

// TestCloseWithoutFlushNodeDrains: with WithCloseTimeout(0) Close does
// not wait, yet the node serves everything the client wrote before its
// goodbye (shared memory: the ring outlives the client's mapping).
func TestCloseWithoutFlushNodeDrains(t *testing.T) {
	n := publications()
	_, socket := nodeChild(t, "SB_EVENT_QUEUE=300000")
	sub, _ := startPeer(t, "peer", socket, "SB_MODE=count", "SB_GROUPS=flood", "SB_CLIENT_QUEUE=300000",
		fmt.Sprintf("SB_EXPECT=%d", n))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithCloseTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := c.Publish(ctx, "flood", []byte("p "+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	err = c.Close()
	t.Logf("Close without flush: %v", err)
	if err != nil && !errors.Is(err, switchboard.ErrUnsent) {
		t.Fatal(err)
	}
	if line := waitLine(t, sub, "got "); line != fmt.Sprintf("got %d dropped 0 disorder 0", n) {
		t.Fatalf("subscriber: %s", line)
	}
}

// TestFlushAcrossProcesses: after Flush, the node has taken every
// message: a subscriber in another process has them all, or is about to
// (routed: in its queues), while the publisher's connection stays open.
func TestFlushAcrossProcesses(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		const n = 20000
		_, socket := nodeChild(t, "SB_EVENT_QUEUE=100000")
		trEnv := "SB_TRANSPORT=" + strconv.Itoa(int(tr))
		sub, _ := startPeer(t, "peer", socket, "SB_MODE=count", "SB_GROUPS=f", trEnv, "SB_CLIENT_QUEUE=100000",
			fmt.Sprintf("SB_EXPECT=%d", n))
		c := dialT(t, socket, switchboard.WithTransport(tr))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := range n {
			if err := c.Publish(ctx, "f", []byte("p "+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if line := waitLine(t, sub, "got "); line != fmt.Sprintf("got %d dropped 0 disorder 0", n) {
			t.Fatalf("subscriber: %s", line)
		}
		if strings.Contains(sub.stdout.String(), "error") {
			t.Fatal(sub.stdout.String())
		}
	})
}

// runDrainer is the "drainer" role: it subscribes to "d" with an event
// handler, drains once the handler has had SB_DRAIN_AFTER events, and
// prints "drained HANDLED RECEIVED DROPPED WAITING", then, 200 ms later,
// "after HANDLED".
func runDrainer() int {
	var handled atomic.Int64
	after, _ := strconv.Atoi(os.Getenv("SB_DRAIN_AFTER"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(os.Getenv("SB_SOCKET")), switchboard.WithEventQueue(100000),
		switchboard.WithEventHandler(func(switchboard.Event) { handled.Add(1) }))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := c.Subscribe(ctx, "d"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready", c.Address())
	for handled.Load() < int64(after) {
		time.Sleep(time.Millisecond)
	}
	if err := c.Drain(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fc := c.FlowControl()
	fmt.Println("drained", handled.Load(), fc.EventsTotal, fc.EventsDropped, fc.EventsWaiting)
	time.Sleep(200 * time.Millisecond)
	fmt.Println("after", handled.Load())
	select {}
}

// TestDrainAcrossProcesses: a subscriber process drains while this one
// publishes: every event it received before Drain returned was handed to
// its handler, none after; the publisher's own Flush succeeds.
func TestDrainAcrossProcesses(t *testing.T) {
	_, socket := nodeChild(t, "SB_EVENT_QUEUE=100000")
	d, _ := startPeer(t, "drainer", socket, "SB_DRAIN_AFTER=5000")
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	published := 0
	for !strings.Contains(d.stdout.String(), "after ") {
		if err := c.Publish(ctx, "d", []byte("p "+strconv.Itoa(published))); err != nil {
			t.Fatal(err)
		}
		published++
		if published%1000 == 0 && ctx.Err() != nil {
			t.Fatal("the drainer never finished")
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var handled, received, dropped, waiting, later int
	fmt.Sscanf(waitLine(t, d, "drained "), "drained %d %d %d %d", &handled, &received, &dropped, &waiting)
	fmt.Sscanf(waitLine(t, d, "after "), "after %d", &later)
	t.Logf("published %d; drainer handled %d of %d received, %d dropped, %d left waiting; %d after", published, handled, received, dropped, waiting, later)
	if handled != received-waiting || dropped != 0 || later != handled || handled < 5000 {
		t.Fatalf("drained %d %d %d %d, after %d", handled, received, dropped, waiting, later)
	}
}
