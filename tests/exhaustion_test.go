package tests

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// TestNodeSurvivesDescriptorExhaustion: a node whose descriptors run out
// under a flood of connections keeps serving the ones it has, refuses
// new ones with a reason the client sees, and serves again by itself once
// descriptors are freed. A connection costs it four descriptors (the
// socket and three doorbells: the segment's memfd is dropped once the
// client has it).
func TestNodeSurvivesDescriptorExhaustion(t *testing.T) {
	node, socket := nodeChild(t)
	pid := node.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	fds := func() int {
		t.Helper()
		l, err := fdsOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	// Descriptors per connection, measured on the node.
	poolSettled(t, pid, socket)
	base := fds()
	var flood []*switchboard.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 4 {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	poolSettled(t, pid, socket) // the memfds go once Welcome is out, spares come back
	checkFor(t, 5*time.Second, func() error {
		if per := float64(fds()-base) / 4; per > 4 {
			return errors.New("more than four descriptors per connection")
		}
		return nil
	})
	t.Logf("descriptors per connection on the node: %.1f", float64(fds()-base)/4)

	// Leave the node room for a few more connections only.
	limit := uint64(fds() + 10)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Skipf("cannot lower the node's descriptor limit: %v", err)
	}
	var refused error
	start := time.Now()
	for range 200 {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
		if err != nil {
			refused = err
			break
		}
		flood = append(flood, c)
	}
	t.Logf("%d connections, then refused after %v: %v", len(flood), time.Since(start), refused)
	if !errors.Is(refused, switchboard.ErrRefused) || !strings.Contains(refused.Error(), "file descriptors") {
		t.Fatalf("a client of a node out of descriptors got %v; want ErrRefused saying why", refused)
	}
	// While exhausted, each client is told why it is refused, or let in
	// when descriptors came free meanwhile (a connection drops its
	// segment's memfd after its Welcome, a refused handshake its partial
	// link), and then holds them; none waits, and the node serves the
	// connections it has.
	admitted := 0
	for range 20 {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
		if err == nil {
			admitted++
			flood = append(flood, c)
			continue
		}
		if !errors.Is(err, switchboard.ErrRefused) || !strings.Contains(err.Error(), "file descriptors") {
			t.Fatalf("while exhausted: %v", err)
		}
	}
	t.Logf("while exhausted: %d of 20 refused, %d let in", 20-admitted, admitted)
	if admitted > 10 {
		t.Fatalf("%d of 20 clients let in while the node was out of descriptors", admitted)
	}
	if _, err := first.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatalf("an existing client lost its node: %v", err)
	}
	if node.cmd.ProcessState != nil {
		t.Fatalf("the node exited: %v", node.cmd.ProcessState)
	}
	// Free descriptors: the node serves new clients again by itself.
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	recovered := time.Now()
	checkFor(t, 10*time.Second, func() error {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil)
		return err
	})
	t.Logf("serving again %v after the descriptors were freed", time.Since(recovered))
}
